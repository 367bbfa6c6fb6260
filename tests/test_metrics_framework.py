"""The documented metrics framework, and its Prometheus exposition."""

import threading

import pytest
from prometheus_client import REGISTRY, Histogram

import hurricane
from hurricane.metrics import registry
from hurricane.metrics.base import (
    AverageMetric,
    CalculatedMetric,
    CounterMetric,
    HurricaneMetric,
    ObservedMetric,
    StoredMetric,
)
from hurricane.metrics.exceptions import MetricIdAlreadyRegistered
from hurricane.metrics.exposition import HttpMetrics
from hurricane.metrics.requests import (
    RequestCounterMetric,
    ResponseSizeMetric,
    ResponseTimeMetric,
)


class OrdersMetric(CounterMetric):
    code = "test_orders"


class LatencyMetric(AverageMetric):
    code = "test_latency"


class TemperatureMetric(StoredMetric):
    code = "test_temperature"


class ParcelWeightMetric(ObservedMetric):
    code = "test_parcel_weight"
    prometheus = Histogram("test_parcel_weight_kg", "Parcels weighed.", buckets=(1, 5, 10))


class DoubleOrdersMetric(CalculatedMetric):
    """As 1.6's own metrics had it: get_value a plain method."""

    code = "test_double_orders"

    def get_value(self):
        return 2 * OrdersMetric.get()


@pytest.fixture(autouse=True)
def custom_metrics():
    metrics = (
        OrdersMetric,
        LatencyMetric,
        TemperatureMetric,
        ParcelWeightMetric,
        DoubleOrdersMetric,
    )
    for metric in metrics:
        registry.register(metric)
    yield
    for metric in metrics:
        registry.unregister(metric)


def test_counter_is_exact_under_threads():
    def work():
        for _ in range(10_000):
            OrdersMetric.increment()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    OrdersMetric.decrement()
    assert OrdersMetric.get() == 39_999


def test_average_and_stored_values():
    for value in (1.0, 2.0, 6.0):
        LatencyMetric.add_value(value)
    assert LatencyMetric.get() == pytest.approx(3.0)
    TemperatureMetric.set(21.5)
    assert TemperatureMetric.get() == 21.5
    assert TemperatureMetric.get_from_registry().value == 21.5


def test_1_6s_metric_api_observed_calculated_and_codes_given_to_instances():
    """The pieces of django-hurricane 1.6's metrics API a project's code calls."""
    assert all(issubclass(m, HurricaneMetric) for m in (ObservedMetric, CalculatedMetric))
    # An observed metric feeds its histogram and keeps the last value.
    before = REGISTRY.get_sample_value("test_parcel_weight_kg_count") or 0
    for weight in (0.5, 7.0):
        ParcelWeightMetric.observe(weight)
    assert ParcelWeightMetric.get() == 7.0
    assert REGISTRY.get_sample_value("test_parcel_weight_kg_count") == before + 2
    assert REGISTRY.get_sample_value("test_parcel_weight_kg_bucket", {"le": "1.0"}) >= 1
    # A calculated metric is computed when read, from a plain-method get_value.
    OrdersMetric.increment()
    OrdersMetric.increment()
    assert DoubleOrdersMetric.get() == 4
    assert registry.get("test_double_orders").get() == 4
    # A code given to an instance is that instance's; the class keeps its own.
    assert CalculatedMetric(code="ad_hoc").code == "ad_hoc"
    assert StoredMetric(code="ad_hoc_stored", initial="x").value == "x"
    assert DoubleOrdersMetric.code == "test_double_orders"
    # The built-in metrics carry their prometheus_client instruments, as in 1.6.
    assert ResponseTimeMetric.prometheus._name == "response_time_seconds"
    assert ResponseSizeMetric.prometheus._name == "response_size_bytes"
    assert RequestCounterMetric.prometheus._name == "request_counter"


def test_duplicate_code_is_refused():
    with pytest.raises(MetricIdAlreadyRegistered):
        registry.register(RequestCounterMetric)


def test_custom_metrics_are_exported():
    OrdersMetric.increment()
    TemperatureMetric.set(4)
    text = (
        HttpMetrics(backlog=lambda: 0, in_flight=lambda: 0, threads=lambda: 6, busy=lambda: 0)
        .render()
        .decode()
    )
    assert "test_orders_total 1.0" in text
    assert "test_temperature 4.0" in text
    assert 'version="' + hurricane.__version__ + '"' in text and "hurricane_info{" in text
    assert "process_resident_memory_bytes" in text
