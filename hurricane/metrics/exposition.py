"""Prometheus exposition of Hurricane's metrics, written with prometheus_client."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

import hurricane
from hurricane.metrics.registry import registry as metrics_registry

CONTENT_TYPE = CONTENT_TYPE_LATEST


class StoredMetricsCollector:
    """Exports every metric of the documented registry (built-in and custom)."""

    def collect(self) -> Iterator:
        yield InfoMetricFamily(
            "hurricane", "Hurricane build information", value={"version": hurricane.__version__}
        )
        for code, metric in list(metrics_registry.metrics.items()):
            value = metric.get() if hasattr(metric, "get_value") else metric.value
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, (int, float)):
                continue
            description = getattr(metric, "description", "") or code
            if getattr(metric, "prometheus_type", "gauge") == "counter":
                yield CounterMetricFamily(code, description, value=value)
            else:
                yield GaugeMetricFamily(code, description, value=value)


def make_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(StoredMetricsCollector())
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
