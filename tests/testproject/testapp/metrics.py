"""Custom metrics, defined the ways a project does: the documented framework, with or
without a prometheus_client instrument of its own (as django-hurricane 1.6 had them),
sync, calculated and async; and prometheus_client's default registry."""

import asyncio

from prometheus_client import Counter, Gauge

from hurricane.metrics import registry
from hurricane.metrics.base import CalculatedMetric, CounterMetric


class ThingsViewedMetric(CounterMetric):
    code = "testapp_things_viewed"
    description = "Things viewed (documented framework)."


class ThingsOrderedMetric(CounterMetric):
    code = "testapp_things_ordered"
    prometheus = Counter(code, "Things ordered (documented framework, own instrument).")


class DoubleThingsMetric(CalculatedMetric):
    """Computed when read, with get_value a plain method, as 1.6's own metrics had it."""

    code = "testapp_double_things"
    prometheus = Gauge(code, "Twice the things viewed (calculated, own instrument).")

    def get_value(self):
        value = 2 * ThingsViewedMetric.get()
        self.prometheus.set(value)
        return value


class AsyncStockMetric(CalculatedMetric):
    code = "testapp_async_stock"
    is_async = True
    prometheus = Gauge(code, "Stock, read asynchronously (own instrument).")

    @classmethod
    async def get(cls):
        await asyncio.sleep(0.01)
        cls.prometheus.set(42)
        return 42


class AsyncShelvesMetric(CalculatedMetric):
    code = "testapp_async_shelves"
    description = "Shelves, read asynchronously (no instrument of its own)."
    is_async = True

    @classmethod
    async def get(cls):
        await asyncio.sleep(0.01)
        return 7


for _metric in (
    ThingsViewedMetric,
    ThingsOrderedMetric,
    DoubleThingsMetric,
    AsyncStockMetric,
    AsyncShelvesMetric,
):
    registry.register(_metric)

things_viewed = Counter("testapp_things_viewed_client", "Things viewed (prometheus_client).")
