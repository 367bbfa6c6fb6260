"""The consumer's engine is apart from the handler users subclass: attributes a
handler sets on itself, under whatever name, leave the engine's state alone, and the
engine leaves the handler's alone."""

from __future__ import annotations

import signal

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import consumer_args, read_records, wait_until


def acked_total(process) -> float:
    text = requests.get(process.probe("/metrics"), timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hurricane_amqp_messages_acked_total":
                return sample.value
    return 0.0


def test_a_handler_with_attributes_of_the_engines_names_consumes_and_acks(
    consume, broker, tmp_path
):
    names = broker.names()
    args = consumer_args(names, "--prefetch", "5")
    args[0] = "testapp.consumers.OwnAttributesHandler"
    process = consume(*args)
    broker.publish(names.exchange, names.queue, [{"id": n} for n in range(30)])
    wait_until(
        lambda: len([r for r in read_records(tmp_path) if r["outcome"] == "acked"]) >= 30,
        30,
        "30 messages handled",
        process,
    )
    wait_until(lambda: acked_total(process) == 30, 10, "30 acks", process)
    records = read_records(tmp_path)
    assert sorted(r["id"] for r in records if r["outcome"] == "acked") == list(range(30))
    own = [r for r in records if r["outcome"] == "own"]
    # The handler's own attributes stayed its own, message after message.
    assert [r["queue"] for r in own] == [list(range(n + 1)) for n in range(30)]
    assert {r["deliveries"] for r in own} == {1}
    assert [r["backlog"] for r in own] == list(range(1, 31))
    assert {r["observer"] for r in own} == {"the handler's own"}
    assert broker.count(names.queue) == 0
    assert "Traceback" not in process.output
    process.signal(signal.SIGTERM)
    assert process.wait_exit(30) == 0
    assert broker.count(names.queue) == 0


def test_the_handler_reads_the_engines_state_until_it_sets_a_name_of_its_own():
    from hurricane.amqp.basehandler import TopicHandler, engine_of

    class Handler(TopicHandler):
        def on_message(self, *args):
            pass

    handler = Handler("orders", "shop", "127.0.0.1", 5672)
    engine = engine_of(handler)
    # 1.6's names and Hurricane's read the engine's state ...
    assert handler._queue_name == handler.queue == "orders"
    assert handler._exchange_name == "shop"
    assert handler._channel is None and handler.backlog == 0
    engine.channel = "the engine's channel"
    assert handler._channel == "the engine's channel"
    # ... until the handler sets them: then they are the handler's, and only the handler's.
    handler._channel = handler._connection = None
    handler._closing = True
    handler.queue = ["the handler's work"]
    handler.backlog = 99
    handler.deliveries = {}
    handler.observer = None
    assert handler._channel is None and handler.backlog == 99
    assert engine.channel == "the engine's channel"
    assert engine.queue == "orders" and engine.backlog == 0 and engine.closing is False
    assert engine.observer is not None and hasattr(engine.deliveries, "allows")
    # 1.6's _prefetch_count is the one name that sets the engine's state: on purpose.
    handler._prefetch_count = 3
    assert engine.prefetch == 3


def test_a_handler_that_skips_super_init_is_told_so():
    from hurricane.amqp.basehandler import TopicHandler
    from hurricane.amqp.worker import AMQPClient

    class Handler(TopicHandler):
        def __init__(self, *args):
            self.name = "no super().__init__()"

    with pytest.raises(TypeError, match=r"Handler.__init__ must call super\(\).__init__"):
        AMQPClient(Handler, "orders", "shop", "127.0.0.1", 5672, amqp_user="guest")
