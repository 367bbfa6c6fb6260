"""The documented metrics framework, and its Prometheus exposition."""

import threading

import pytest

import hurricane
from hurricane.metrics import registry
from hurricane.metrics.base import AverageMetric, CounterMetric, StoredMetric
from hurricane.metrics.exceptions import MetricIdAlreadyRegistered
from hurricane.metrics.exposition import HttpMetrics
from hurricane.metrics.requests import RequestCounterMetric


class OrdersMetric(CounterMetric):
    code = "test_orders"


class LatencyMetric(AverageMetric):
    code = "test_latency"


class TemperatureMetric(StoredMetric):
    code = "test_temperature"


@pytest.fixture(autouse=True)
def custom_metrics():
    for metric in (OrdersMetric, LatencyMetric, TemperatureMetric):
        registry.register(metric)
    yield
    for metric in (OrdersMetric, LatencyMetric, TemperatureMetric):
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
