"""Custom metrics, defined the two ways a project does: the documented framework,
and prometheus_client's default registry."""

from prometheus_client import Counter

from hurricane.metrics import registry
from hurricane.metrics.base import CounterMetric


class ThingsViewedMetric(CounterMetric):
    code = "testapp_things_viewed"
    description = "Things viewed (documented framework)."


registry.register(ThingsViewedMetric)

things_viewed = Counter("testapp_things_viewed_client", "Things viewed (prometheus_client).")
