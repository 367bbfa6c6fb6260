"""The built-in metrics, under the names and units of the original library, each with
its prometheus_client instrument as ``prometheus`` (in the default registry) where
the original exported one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, Info

from hurricane.metrics.base import (
    AverageMetric,
    CalculatedMetric,
    CounterMetric,
    ObservedMetric,
    StoredMetric,
)

# Response sizes from 256 bytes to 16 MiB, by powers of 4. (The original library
# used the default buckets, which are meant for seconds: every response above 10 bytes
# fell into +Inf, so no quantile could be read from them.)
RESPONSE_SIZE_BUCKETS = tuple(256 * 4**power for power in range(9))


class RequestQueueLengthMetric(CalculatedMetric):
    """App requests waiting for a worker thread right now."""

    code = "request_queue_length"
    description = "App requests waiting for a worker thread."
    # With ``serve --processes``, each serving process's gauge is kept while it lives.
    prometheus = Gauge(code, description, multiprocess_mode="liveall")
    # Set by the server at start-up: a callable returning the backlog.
    backlog_source: Callable[[], int] | None = None

    @classmethod
    def get_value(cls) -> int:
        source = cls.backlog_source
        length = source() if source is not None else 0
        cls.prometheus.set(length)
        return length


class RequestCounterMetric(CounterMetric):
    code = "request_counter"
    description = "App requests answered since the process started."
    prometheus = Counter(code, description)


class ResponseTimeAverageMetric(AverageMetric):
    code = "response_time_average"
    description = "Mean app response time in milliseconds since the process started."
    prometheus = Gauge(code, description, multiprocess_mode="liveall")


class StartupTimeMetric(StoredMetric):
    """Seconds from process start until serving; None until then (the startup probe
    answers 400 while it is None)."""

    code = "startup_time"
    description = "Seconds from process start until the app port listened."


class HealthMetric(StoredMetric):
    code = "health"
    description = "1 while the last liveness probe passed, 0 otherwise."


class ReadinessMetric(StoredMetric):
    code = "readiness"
    description = "1 while the last readiness probe passed, 0 otherwise."


class ResponseTimeMetric(ObservedMetric):
    """The server observes the instrument only, as for ResponseSizeMetric and
    PathCounterMetric: their stored values (the last observation, a total that
    request_counter already holds) change through their own methods alone."""

    code = "response_time_seconds"
    description = "Time from an app request's headers to the end of its response."
    prometheus = Histogram(code, description)


class ResponseSizeMetric(ObservedMetric):
    code = "response_size_bytes"
    description = "Bytes of app response bodies sent."
    prometheus = Histogram(code, description, buckets=RESPONSE_SIZE_BUCKETS)


class PathCounterMetric(CounterMetric):
    """App requests by method and by the URL pattern Django matched: the ``path`` label
    is ``/`` followed by the pattern (``/api/items/<int:pk>/``), or ``unmatched``.
    Never the raw path, whose distinct values a client chooses at will."""

    code = "path_requests_total"
    description = "App requests by method and matched URL pattern."
    prometheus = Counter(code, description, ["method", "path"])

    @classmethod
    def increment(cls, method: str, path: str) -> None:  # type: ignore[override]
        cls.prometheus.labels(method, path).inc()
        cls.change_by(1)


class InfoMetrics(StoredMetric):
    """Hurricane, its platform and how it serves, as the labels of ``hurricane_info``."""

    code = "hurricane"
    description = "Hurricane, its platform and how it serves."
    prometheus = Info(code, description)

    @classmethod
    def set(cls, value: dict[str, Any]) -> None:
        cls.prometheus.info(value)
        super().set(value)
