"""The built-in metrics, under the names users of the original library chart."""

from __future__ import annotations

from hurricane.metrics.base import AverageMetric, CalculatedMetric, CounterMetric, StoredMetric


class RequestQueueLengthMetric(CalculatedMetric):
    """App requests waiting for a worker thread right now."""

    code = "request_queue_length"
    description = "App requests waiting for a worker thread."
    # Set by the server at start-up: a callable returning the backlog.
    backlog_source = None

    @classmethod
    def get_value(cls) -> int:
        source = cls.backlog_source
        return source() if source is not None else 0


class RequestCounterMetric(CounterMetric):
    code = "request_counter"
    description = "App requests answered since the process started."


class ResponseTimeAverageMetric(AverageMetric):
    code = "response_time_average"
    description = "Mean app response time in seconds since the process started."


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
