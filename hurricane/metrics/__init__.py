from hurricane.metrics.registry import MetricsRegistry, registry
from hurricane.metrics.requests import (
    HealthMetric,
    InfoMetrics,
    PathCounterMetric,
    ReadinessMetric,
    RequestCounterMetric,
    RequestQueueLengthMetric,
    ResponseSizeMetric,
    ResponseTimeAverageMetric,
    ResponseTimeMetric,
    StartupTimeMetric,
)

for _metric in (
    RequestCounterMetric,
    RequestQueueLengthMetric,
    ResponseTimeAverageMetric,
    StartupTimeMetric,
    HealthMetric,
    ReadinessMetric,
    ResponseTimeMetric,
    ResponseSizeMetric,
    PathCounterMetric,
    InfoMetrics,
):
    registry.register(_metric)

__all__ = [
    "HealthMetric",
    "InfoMetrics",
    "MetricsRegistry",
    "PathCounterMetric",
    "ReadinessMetric",
    "RequestCounterMetric",
    "RequestQueueLengthMetric",
    "ResponseSizeMetric",
    "ResponseTimeAverageMetric",
    "ResponseTimeMetric",
    "StartupTimeMetric",
    "registry",
]
