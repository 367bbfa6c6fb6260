"""The documented metrics framework: metrics are classes with a ``code``, and their
values live in instances kept by :data:`hurricane.metrics.registry.registry`.

A metric class may carry a prometheus_client instrument as ``prometheus``: the
framework's methods update it along with the stored value (``increment()`` counts it
up, ``add_value()`` sets it, ``observe()`` observes it), and it is exported under its
own name from prometheus_client's default registry. A metric without one is exported
under its ``code`` (see hurricane.metrics.exposition).

Updates take a lock per metric: they run in worker threads and cost well under a
microsecond of lock hold time.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from hurricane.metrics.registry import registry


class HurricaneMetric:
    """What every metric has: its ``code`` in the registry; ``is_async`` when its
    ``get()`` is a coroutine function (the metrics endpoint awaits it before each
    scrape); and optionally a prometheus_client instrument."""

    code: str = ""
    is_async: bool = False
    prometheus: Any = None
    # How the metrics endpoint exports a metric without ``prometheus``.
    prometheus_type: str = "gauge"
    description: str = ""

    @classmethod
    def get_from_registry(cls) -> Any:
        return registry.metrics[cls.code]


class StoredMetric(HurricaneMetric):
    """A metric whose value is stored in the registry under ``code``."""

    value: Any = None

    def __init__(self, code: str | None = None, initial: Any = None) -> None:
        if code:
            self.code = code
        if initial is not None:
            self.value = initial
        self.lock = threading.Lock()

    @classmethod
    def set(cls, value: Any) -> None:
        registry.metrics[cls.code].value = value

    @classmethod
    def get(cls) -> Any:
        return registry.metrics[cls.code].value


class CounterMetric(StoredMetric):
    """A count that goes up (and, where it must, down: a Prometheus counter cannot,
    so ``decrement()`` changes the stored value only)."""

    value: int = 0
    prometheus_type = "counter"

    @classmethod
    def increment(cls) -> None:
        cls.change_by(1)
        if cls.prometheus is not None:
            cls.prometheus.inc()

    @classmethod
    def decrement(cls) -> None:
        cls.change_by(-1)

    @classmethod
    def change_by(cls, amount: int) -> None:
        """Change the stored value only."""
        metric = registry.metrics[cls.code]
        with metric.lock:
            metric.value = (metric.value or 0) + amount


class AverageMetric(StoredMetric):
    """A running mean of the values added since the process started."""

    value: float | None = None
    count: int = 0

    @classmethod
    def add_value(cls, value: float) -> None:
        metric = registry.metrics[cls.code]
        with metric.lock:
            metric.count += 1
            current = metric.value or 0.0
            metric.value = mean = current + (value - current) / metric.count
        if cls.prometheus is not None:
            cls.prometheus.set(mean)


class ObservedMetric(StoredMetric):
    """Observations (durations, sizes) for a histogram or summary in ``prometheus``;
    the stored value is the last one observed."""

    value: float = 0

    @classmethod
    def observe(cls, value: float) -> None:
        if cls.prometheus is not None:
            cls.prometheus.observe(value)
        registry.metrics[cls.code].value = value


class CalculatedMetric(HurricaneMetric):
    """A metric computed when read, not stored (e.g. the current request queue).

    Subclasses define ``get_value``, as a classmethod or, as the original library's
    own did, as a plain method (it is then given the class); an async metric may
    instead define ``async def get`` and set ``is_async``."""

    def __init__(self, code: str | None = None) -> None:
        if code:
            self.code = code

    @classmethod
    def get_value(cls) -> Any:
        raise NotImplementedError

    @classmethod
    def get(cls) -> Any:
        if isinstance(inspect.getattr_static(cls, "get_value"), (classmethod, staticmethod)):
            return cls.get_value()
        return cls.get_value(cls)  # type: ignore[call-arg]
