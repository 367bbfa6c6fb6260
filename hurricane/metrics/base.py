"""The documented metrics framework: metrics are classes with a ``code``, and their
values live in instances kept by :data:`hurricane.metrics.registry.registry`.

Updates take a lock per metric: they run in worker threads and cost well under a
microsecond of lock hold time.
"""

from __future__ import annotations

import threading
from typing import Any

from hurricane.metrics.registry import registry


class StoredMetric:
    """A metric whose value is stored in the registry under ``code``."""

    code: str = ""
    value: Any = None
    # "gauge" or "counter": how the Prometheus endpoint exports it.
    prometheus_type: str = "gauge"
    description: str = ""

    def __init__(self, code: str | None = None, initial: Any = None) -> None:
        if code:
            self.code = code
        if initial is not None:
            self.value = initial
        self.lock = threading.Lock()

    @classmethod
    def get_from_registry(cls) -> StoredMetric:
        return registry.get(cls.code)

    @classmethod
    def set(cls, value: Any) -> None:
        cls.get_from_registry().value = value

    @classmethod
    def get(cls) -> Any:
        return cls.get_from_registry().value


class CounterMetric(StoredMetric):
    """A count that goes up (and, where it must, down)."""

    value: int = 0
    prometheus_type = "counter"

    @classmethod
    def increment(cls) -> None:
        metric = cls.get_from_registry()
        with metric.lock:
            metric.value = (metric.value or 0) + 1

    @classmethod
    def decrement(cls) -> None:
        metric = cls.get_from_registry()
        with metric.lock:
            metric.value = (metric.value or 0) - 1


class AverageMetric(StoredMetric):
    """A running mean of the values added since the process started."""

    value: float | None = None
    count: int = 0

    @classmethod
    def add_value(cls, value: float) -> None:
        metric = cls.get_from_registry()
        with metric.lock:
            metric.count += 1
            current = metric.value or 0.0
            metric.value = current + (value - current) / metric.count


class CalculatedMetric:
    """A metric computed when read, not stored (e.g. the current request queue)."""

    code: str = ""
    prometheus_type: str = "gauge"
    description: str = ""

    @classmethod
    def get_value(cls) -> Any:
        raise NotImplementedError

    @classmethod
    def get_from_registry(cls) -> Any:
        return registry.get(cls.code)

    @classmethod
    def get(cls) -> Any:
        return cls.get_value()
