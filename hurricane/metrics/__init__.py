from hurricane.metrics.registry import MetricsRegistry, registry
from hurricane.metrics.requests import (
    HealthMetric,
    ReadinessMetric,
    RequestCounterMetric,
    RequestQueueLengthMetric,
    ResponseTimeAverageMetric,
    StartupTimeMetric,
)

for _metric in (
    RequestQueueLengthMetric,
    RequestCounterMetric,
    ResponseTimeAverageMetric,
    StartupTimeMetric,
    HealthMetric,
    ReadinessMetric,
):
    registry.register(_metric)

__all__ = ["MetricsRegistry", "registry"]
