from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hurricane.metrics.exceptions import MetricIdAlreadyRegistered

if TYPE_CHECKING:  # hurricane.metrics.base imports this module
    from hurricane.metrics.base import HurricaneMetric


class MetricsRegistry:
    """Holds one instance per registered metric class, keyed by its ``code``."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}

    def register(self, metric_class: type[HurricaneMetric]) -> None:
        if metric_class.code in self.metrics:
            raise MetricIdAlreadyRegistered(
                f"Metric ID ({metric_class.code}) is already registered."
            )
        self.metrics[metric_class.code] = metric_class()

    def unregister(self, metric_class: type[HurricaneMetric]) -> None:
        self.metrics.pop(metric_class.code, None)

    def get(self, code: str) -> Any:
        return self.metrics[code]


registry = MetricsRegistry()
