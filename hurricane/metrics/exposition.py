"""Prometheus exposition, written with prometheus_client.

The endpoint shows, in one scrape:

- Hurricane's HTTP metrics under conventional names (:class:`HttpMetrics`);
- the documented metrics of :mod:`hurricane.metrics.registry`, built-in and custom,
  under the names users of the original library chart (``request_counter_total``...);
- whatever the project registered in prometheus_client's default registry, which
  also holds the process, platform and garbage-collector metrics.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Iterator

import django
import tornado
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

import hurricane
from hurricane.metrics.registry import registry as metrics_registry

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Any other method a client invents is counted as "other": labels must stay bounded.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
UNMATCHED = "unmatched"


@functools.lru_cache(maxsize=4096)
def route_of(path_info: str) -> str:
    """The URL pattern Django matches for a path (``api/items/<int:pk>/``), or
    ``unmatched``; ``/`` for the empty root pattern. Cached: the lookup runs once
    per distinct path, in the worker thread, off the event loop."""
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path_info)
    except Resolver404:
        return UNMATCHED
    except Exception:  # a broken URLconf answers 500 anyway; keep the label bounded
        return UNMATCHED
    return match.route or "/"


class StoredMetricsCollector:
    """Exports every metric of the documented registry (built-in and custom)."""

    def collect(self) -> Iterator:
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


class DefaultRegistryCollector:
    """prometheus_client's default registry: process metrics and the project's own."""

    def collect(self) -> Iterator:
        return REGISTRY.collect()


class ProcessMetrics:
    """What every Hurricane process exposes, in a registry of its own (so several
    servers can live in one process, e.g. in tests): the start-up time, the info
    metric, the documented registry and prometheus_client's default registry."""

    startup_help = "Seconds from the start of the process until it served."

    def __init__(self, include_default_registry: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.startup = Gauge(
            "hurricane_startup_duration_seconds", self.startup_help, registry=self.registry
        )
        Info("hurricane", "Hurricane and its platform.", registry=self.registry).info(
            {
                "version": hurricane.__version__,
                "django": django.get_version(),
                "tornado": tornado.version,
                "python": platform.python_version(),
            }
        )
        self.registry.register(StoredMetricsCollector())
        if include_default_registry:
            self.registry.register(DefaultRegistryCollector())

    def gauge_of(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time, never set on the request path."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpRequestMetrics:
    """The per-request instruments. With ``--processes``, each serving process keeps
    them in prometheus_client's multiprocess files and only the supervisor's
    registry (:class:`SupervisorMetrics`) shows them, added up."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "hurricane_http_requests",
            "App requests answered, by method, status and matched URL pattern.",
            ["method", "status", "route"],
            registry=registry,
        )
        self.duration = Histogram(
            "hurricane_http_request_duration_seconds",
            "Time from the request's headers to the end of its response.",
            ["method", "route"],
            registry=registry,
        )
        self._children: dict[tuple[str, int, str], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, status: int, route: str, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "other"
        # labels() checks, converts and looks up under a lock on every call; the pair
        # of children is looked up once per label combination (as bounded as the
        # labels: known methods, the project's statuses and URL patterns).
        key = (method, status, route)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, str(status), route),
                self.duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


IN_FLIGHT_HELP = "Requests on the app port being read, waiting, run or written."
BACKLOG_HELP = "App requests waiting for a free worker thread."


class HttpMetrics(ProcessMetrics, HttpRequestMetrics):
    """The app server's metrics, with conventional names and units."""

    startup_help = "Seconds from the start of serve until the app port listened."

    def __init__(self, backlog: Callable[[], float], in_flight: Callable[[], float]) -> None:
        ProcessMetrics.__init__(self)
        HttpRequestMetrics.__init__(self, self.registry)
        self.gauge_of("hurricane_http_requests_in_flight", IN_FLIGHT_HELP, in_flight)
        self.gauge_of("hurricane_http_request_backlog", BACKLOG_HELP, backlog)


class SupervisorMetrics(ProcessMetrics):
    """``serve --processes N``: the serving processes' request metrics added up from
    prometheus_client's multiprocess files, and gauges read from their shared slots.

    prometheus_client's default registry is left out: in the supervisor it holds the
    project's metrics at their import-time values, which would repeat (wrongly) the
    names the multiprocess files carry."""

    startup_help = "Seconds from the start of serve until every serving process served."

    def __init__(
        self,
        multiprocess_dir: str,
        backlog: Callable[[], float],
        in_flight: Callable[[], float],
        serving: Callable[[], float],
    ) -> None:
        from prometheus_client import multiprocess

        super().__init__(include_default_registry=False)
        multiprocess.MultiProcessCollector(self.registry, path=multiprocess_dir)
        self.gauge_of("hurricane_http_requests_in_flight", IN_FLIGHT_HELP, in_flight)
        self.gauge_of("hurricane_http_request_backlog", BACKLOG_HELP, backlog)
        self.gauge_of(
            "hurricane_serving_processes", "Serving processes that answer requests.", serving
        )


class ConsumerMetrics(ProcessMetrics):
    """The AMQP consumer's metrics, with conventional names and units."""

    startup_help = "Seconds from the start of consume until it consumed."

    def __init__(self, backlog: Callable[[], float], connected: Callable[[], float]) -> None:
        super().__init__()

        def counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, documentation, labels, registry=self.registry)

        self.received = counter(
            "hurricane_amqp_messages_received", "Messages delivered by the broker."
        )
        self.acked = counter("hurricane_amqp_messages_acked", "Messages acknowledged.")
        self.rejected = counter(
            "hurricane_amqp_messages_rejected",
            "Messages rejected; requeued=true ones went back to the queue, the others "
            "were dead-lettered or dropped.",
            ("requeued",),
        )
        self.errors = counter("hurricane_amqp_handler_errors", "on_message calls that raised.")
        self.given_up = counter(
            "hurricane_amqp_messages_given_up",
            "Messages rejected for good (dead-lettered or dropped) by the consumer: "
            "reason=max_deliveries, max_message_size or handler_error.",
            ("reason",),
        )
        self.reconnects = counter(
            "hurricane_amqp_reconnects", "Connections opened again after a loss."
        )
        self.duration = Histogram(
            "hurricane_amqp_handler_duration_seconds",
            "Time on_message took per message.",
            registry=self.registry,
        )
        self.gauge_of(
            "hurricane_amqp_connected",
            "1 while connected to the broker and consuming, else 0.",
            connected,
        )
        self.gauge_of(
            "hurricane_amqp_message_backlog",
            "Messages received and waiting for the handler.",
            backlog,
        )
