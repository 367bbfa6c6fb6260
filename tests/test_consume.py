"""``manage.py consume`` against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

Every test uses queue and exchange names of its own (the ``broker`` fixture), so
tests cannot see each other's messages.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.tcp_proxy import TcpProxy

from conftest import (
    HANDLER,
    TEST_PROJECT,
    base_env,
    consumer_args,
    free_port,
    port_open,
    read_records,
    status,
    wait_until,
)


def metric(process, name: str, labels: dict | None = None) -> float:
    text = requests.get(process.probe("/metrics"), timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return sample.value
    raise AssertionError(f"no metric {name} {labels or ''}")


def handled_ids(tmp_path: Path, outcome: str = "acked") -> list:
    return [r["id"] for r in read_records(tmp_path) if r["outcome"] == outcome]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def test_hundreds_of_messages_are_each_handled_exactly_once(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--prefetch", "20"))
    broker.publish(names.exchange, names.queue, [{"id": n} for n in range(500)])
    wait_until(lambda: len(read_records(tmp_path)) >= 500, 60, "500 messages handled")
    wait_until(
        lambda: metric(process, "hurricane_amqp_messages_acked_total") == 500, 10, "500 acks"
    )
    time.sleep(0.5)  # anything handled twice would show up now
    assert sorted(handled_ids(tmp_path)) == list(range(500))
    assert metric(process, "hurricane_amqp_messages_received_total") == 500
    assert metric(process, "hurricane_amqp_handler_errors_total") == 0
    assert metric(process, "hurricane_amqp_handler_duration_seconds_count") == 500
    assert metric(process, "hurricane_amqp_connected") == 1
    assert broker.count(names.queue) == 0
    process.signal(signal.SIGTERM)
    assert process.wait_exit(30) == 0
    # Messages published to the routing key nobody else binds stay for the next consumer.
    assert broker.count(names.queue) == 0


def test_probes_follow_the_connection(consume, broker, tmp_path):
    names = broker.names()
    # Nothing listens on this port: the consumer keeps trying (--reconnect) and is alive,
    # but neither started nor ready.
    dead_port = str(free_port())
    process = consume(*consumer_args(names, "--amqp-port", dead_port, "--reconnect"), wait=False)
    process.wait_for(lambda: status(process.probe("/alive")) == 200, 30, "liveness")
    assert status(process.probe("/startup")) == 400
    assert status(process.probe("/ready")) == 400
    assert "not connected to the broker" in requests.get(process.probe("/ready"), timeout=5).text
    assert "connecting again in" in process.output
    process.signal(signal.SIGTERM)
    assert process.wait_exit(30) == 0

    process = consume(*consumer_args(names))
    for path in ("/startup", "/ready", "/alive", "/ready/", "/alive/"):
        assert status(process.probe(path)) == 200, path
    response = requests.head(process.probe("/ready"), timeout=5)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_settings_and_environment_give_the_connection(consume, broker, tmp_path):
    names = broker.names()
    # The setting beats the environment (whose port is wrong); the command line beats both.
    settings = {"AMQP_HOST": "127.0.0.1", "AMQP_PORT": 5672, "HURRICANE_QUEUE": names.queue}
    process = consume(
        HANDLER,
        "--exchange",
        names.exchange,
        env={
            "TEST_SETTINGS": json.dumps(settings),
            "AMQP_PORT": "1",
            "AMQP_VHOST": "/",
            "AMQP_USER": "guest",
            "AMQP_PASSWORD": "guest",
            "HURRICANE_QUEUE": "not-this-queue",
        },
    )
    broker.publish(names.exchange, names.queue, [{"id": "via-settings"}])
    wait_until(lambda: handled_ids(tmp_path) == ["via-settings"], 20, "the message")
    assert "not-this-queue" not in process.output

    # Everything from the environment, the handler too; a wrong setting loses to the
    # command line.
    other = broker.names()
    process = consume(
        "--amqp-port",
        "5672",
        env={
            "TEST_SETTINGS": json.dumps({"AMQP_PORT": 1}),
            "HURRICANE_HANDLER": HANDLER,
            "HURRICANE_QUEUE": other.queue,
            "HURRICANE_EXCHANGE": other.exchange,
            "AMQP_HOST": "127.0.0.1",
        },
    )
    broker.publish(other.exchange, other.queue, [{"id": "via-environment"}])
    wait_until(
        lambda: handled_ids(tmp_path) == ["via-settings", "via-environment"], 20, "the message"
    )


def test_routing_key_and_durable_queue(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--routing-key", "orders.*", "--durable"))
    broker.publish(names.exchange, "orders.created", [{"id": 1}])
    # The queue's name is not a binding when --routing-key is given: nothing routes it.
    with pytest.raises(broker.pika.exceptions.UnroutableError):
        broker.publish(names.exchange, names.queue, [{"id": "not-routed"}])
    wait_until(lambda: handled_ids(tmp_path) == [1], 20, "the routed message")
    time.sleep(0.3)
    assert handled_ids(tmp_path) == [1]
    process.signal(signal.SIGTERM)
    assert process.wait_exit(30) == 0
    # Durable: the queue outlives its consumer with its bindings.
    broker.publish(names.exchange, "orders.paid", [{"id": 2}], persistent=True)
    assert broker.count(names.queue) == 1


def sigterm_once_received(process, messages: int) -> None:
    """SIGTERM once the consumer has received ``messages``; returns when it drains."""
    wait_until(
        lambda: metric(process, "hurricane_amqp_messages_received_total") == messages,
        20,
        f"{messages} message(s) received",
    )
    process.signal(signal.SIGTERM)
    wait_until(lambda: status(process.probe("/ready")) == 503, 5, "readiness 503")


def test_sigterm_finishes_the_message_in_hand_and_loses_nothing(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--prefetch", "10"))
    broker.publish(
        names.exchange,
        names.queue,
        [{"id": "slow", "sleep": 3}] + [{"id": n} for n in range(5)],
    )
    sigterm_once_received(process, 6)
    assert process.wait_exit(30) == 0
    assert handled_ids(tmp_path) == ["slow"]
    assert "Returned 5 messages not yet begun to the queue" in process.output
    assert broker.count(names.queue) == 5

    consume(*consumer_args(names))
    wait_until(lambda: len(read_records(tmp_path)) == 6, 20, "the rest")
    time.sleep(0.3)
    assert sorted(map(str, handled_ids(tmp_path))) == sorted(["slow", "0", "1", "2", "3", "4"])


def test_a_second_signal_exits_at_once(consume, broker, tmp_path):
    """SIGTERM waits for the message in hand; SIGINT after it means "now": the
    process exits at once (128 + 2), and the unacknowledged message stays queued."""
    names = broker.names()
    process = consume(*consumer_args(names))
    broker.publish(names.exchange, names.queue, [{"id": "slow", "sleep": 20}])
    sigterm_once_received(process, 1)
    began = time.monotonic()
    process.signal(signal.SIGINT)
    assert process.wait_exit(10) == 128 + signal.SIGINT
    assert time.monotonic() - began < 5
    assert "Second SIGINT: exiting at once" in process.output
    wait_until(lambda: broker.count(names.queue) == 1, 20, "the message back in the queue")


def error_lines(process) -> list[str]:
    return [line for line in process.output.splitlines() if " ERROR " in line]


def outcomes(tmp_path: Path, message_id, outcome: str) -> int:
    return sum(
        1 for r in read_records(tmp_path) if r["id"] == message_id and r["outcome"] == outcome
    )


def test_a_poison_message_is_given_up_after_max_deliveries_while_the_others_flow(
    consume, broker, tmp_path
):
    """Without a dead-letter exchange, a message that always fails (or that the handler
    always puts back) is handled --max-deliveries times (5 by default), then dropped
    with one ERROR line; the traceback is logged once, and the other messages all go
    through."""
    names = broker.names()
    process = consume(*consumer_args(names))
    goods = [{"id": n} for n in range(100)]
    broker.publish(names.exchange, names.queue, goods[:50])
    broker.publish(
        names.exchange, names.queue, [{"id": "poison", "raise": True}], message_id="poison-1"
    )
    broker.publish(names.exchange, names.queue, [{"id": "boomerang", "requeue": True}])
    broker.publish(names.exchange, names.queue, goods[50:])
    wait_until(lambda: len(handled_ids(tmp_path)) == 100, 30, "the good messages")
    wait_until(lambda: len(error_lines(process)) == 2, 30, "two messages given up", process)
    time.sleep(1)  # a further delivery would show now
    assert sorted(handled_ids(tmp_path)) == list(range(100))
    assert outcomes(tmp_path, "poison", "raised") == 5
    assert outcomes(tmp_path, "boomerang", "requeued") == 5
    [poison] = [line for line in error_lines(process) if "'poison-1'" in line]
    [boomerang] = [line for line in error_lines(process) if "without message_id" in line]
    assert (
        f"Gave up on message 'poison-1' (routing key {names.queue!r}): on_message raised on "
        "delivery 5 of --max-deliveries 5 (RuntimeError: handler failed on message poison); "
        "dropped, as no --dead-letter-exchange is set" in poison
    )
    assert (
        f"Gave up on a message without message_id (routing key {names.queue!r}): delivered "
        "6 times, over --max-deliveries 5; dropped" in boomerang
    )
    assert process.output.count("Traceback") == 1
    assert process.output.count("on_message raised again for message 'poison-1'") == 3
    assert (
        metric(process, "hurricane_amqp_messages_given_up_total", {"reason": "max_deliveries"}) == 2
    )
    assert metric(process, "hurricane_amqp_handler_errors_total") == 5
    assert broker.count(names.queue) == 0


def test_given_up_messages_go_to_the_dead_letter_queue(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--dead-letter-exchange", names.dead_letter_exchange))
    broker.publish(
        names.exchange,
        names.queue,
        [{"id": "bad", "raise": True}, {"id": "rejected", "reject": True}, {"id": "good"}],
    )
    wait_until(lambda: broker.count(names.dead_letter_queue) == 2, 30, "two dead letters", process)
    assert sorted(m["id"] for m in broker.take_all(names.dead_letter_queue)) == ["bad", "rejected"]
    assert handled_ids(tmp_path) == ["good"]
    # Retried first: dead-lettering is for what retrying does not cure.
    assert outcomes(tmp_path, "bad", "raised") == 5
    [line] = error_lines(process)
    assert "on delivery 5 of --max-deliveries 5" in line
    assert f"dead-lettered to exchange {names.dead_letter_exchange!r}" in line
    assert metric(process, "hurricane_amqp_handler_errors_total") == 5
    assert metric(process, "hurricane_amqp_messages_rejected_total", {"requeued": "false"}) == 2
    assert status(process.probe("/alive")) == 200


def test_a_quorum_queue_counts_deliveries_across_consumers(consume, broker, tmp_path):
    """A quorum queue's x-delivery-count survives the consumer: a message already
    returned four times by others gets one more try (delivery 5 of 5), not five."""
    names = broker.names()
    args = consumer_args(
        names, "--queue-type", "quorum", "--dead-letter-exchange", names.dead_letter_exchange
    )
    first = consume(*args)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(30) == 0
    broker.publish(names.exchange, names.queue, [{"id": "poison", "raise": True}])
    connection = broker.connection()
    try:
        channel = connection.channel()
        for _ in range(4):  # four consumers that failed on it, elsewhere
            method, _, _ = channel.basic_get(names.queue)
            channel.basic_nack(method.delivery_tag, requeue=True)
    finally:
        connection.close()
    broker.publish(names.exchange, names.queue, [{"id": "good"}])
    process = consume(*args)
    wait_until(lambda: broker.count(names.dead_letter_queue) == 1, 30, "the dead letter", process)
    assert broker.take_all(names.dead_letter_queue) == [{"id": "poison", "raise": True}]
    wait_until(lambda: handled_ids(tmp_path) == ["good"], 10, "the good message")
    assert outcomes(tmp_path, "poison", "raised") == 1
    [line] = error_lines(process)
    assert "on_message raised on delivery 5 of --max-deliveries 5" in line
    assert "(quorum queue;" in process.output
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "name", "type"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    types = dict(line.split("\t") for line in listed.splitlines() if "\t" in line)
    assert types[names.queue] == types[names.dead_letter_queue] == "quorum"


def test_a_queue_declared_before_with_another_type_is_one_line_and_exit_1(
    consume, broker, tmp_path
):
    """A queue's type is fixed when it is made: the broker refuses the consumer's
    declaration, which is said once, not retried (even with --reconnect)."""
    names = broker.names()
    first = consume(*consumer_args(names, "--durable"))
    first.signal(signal.SIGTERM)
    assert first.wait_exit(30) == 0
    process = consume(*consumer_args(names, "--queue-type", "quorum", "--reconnect"), wait=False)
    assert process.wait_exit(30) == 1
    assert process.output.count("PRECONDITION_FAILED") == 1, process.output
    last_line = process.output.strip().splitlines()[-1]
    assert " ERROR " in last_line
    assert f"inequivalent arg 'x-queue-type' for queue {names.queue!r}" in last_line


def test_failed_messages_come_back_later_and_failures_in_a_row_pause_the_handler(
    consume, broker, tmp_path
):
    """With --max-deliveries 0 there is no limit. A failed message comes back, marked
    redelivered, after a delay that doubles with each delivery (0.5 s, 1 s, ...);
    different messages failing one after the other (a dependency down) also pause the
    handler, so neither turns into a hot loop."""
    names = broker.names()
    process = consume(*consumer_args(names, "--max-deliveries", "0"))
    broker.publish(
        names.exchange, names.queue, [{"id": "a", "raise": True}, {"id": "b", "raise": True}]
    )
    wait_until(lambda: outcomes(tmp_path, "a", "raised") >= 2, 20, "a redelivery", process)
    time.sleep(1.5)
    raised = [r for r in read_records(tmp_path) if r["outcome"] == "raised"]
    assert [r["redelivered"] for r in raised[:2]] == [False, False]
    assert all(r["redelivered"] for r in raised[2:])
    assert 4 <= len(raised) <= 8  # a hot loop would be thousands
    assert "on delivery 1; requeueing it in 0.5 s" in process.output
    assert (
        "on delivery 2: RuntimeError: handler failed on message a; requeueing it in 1.0 s"
        in process.output
    )
    assert "2 messages failed in a row: pausing the handler 0.5 s" in process.output
    assert "Gave up" not in process.output
    assert metric(process, "hurricane_amqp_messages_rejected_total", {"requeued": "true"}) >= 2


def test_an_oversized_message_is_rejected_unread(consume, broker, tmp_path):
    names = broker.names()
    process = consume(
        *consumer_args(
            names,
            "--max-message-size",
            "1M",
            "--dead-letter-exchange",
            names.dead_letter_exchange,
        )
    )
    big = {"id": "big", "pad": "x" * 2 * 1024**2}
    broker.publish(names.exchange, names.queue, [big], message_id="big-1")
    broker.publish(names.exchange, names.queue, [{"id": "small"}])
    wait_until(lambda: handled_ids(tmp_path) == ["small"], 20, "the small message")
    wait_until(lambda: broker.count(names.dead_letter_queue) == 1, 10, "the dead letter")
    assert broker.take_all(names.dead_letter_queue) == [big]
    assert [r["id"] for r in read_records(tmp_path)] == ["small"]
    [line] = error_lines(process)
    assert (
        f"Gave up on message 'big-1' (routing key {names.queue!r}): its body is 2 MiB, over "
        "--max-message-size 1 MiB (not read); dead-lettered to exchange "
        f"{names.dead_letter_exchange!r}" in line
    )
    assert (
        metric(process, "hurricane_amqp_messages_given_up_total", {"reason": "max_message_size"})
        == 1
    )


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def test_large_messages_do_not_grow_the_consumers_memory(consume, broker, tmp_path):
    """Ten 30 MB messages, over the default --max-message-size (16 MiB), each rejected
    as its header arrives: the consumer's peak memory grows by less than one of them
    (read whole, ten of them took it past 300 MB)."""
    names = broker.names()
    process = consume(*consumer_args(names))
    pid = process.process.pid
    before = memory_mb(pid, "VmRSS")
    pad = "x" * 30 * 1024**2
    broker.publish(names.exchange, names.queue, [{"id": n, "pad": pad} for n in range(10)])
    del pad
    wait_until(
        lambda: (
            metric(process, "hurricane_amqp_messages_received_total") == 10
            and metric(process, "hurricane_amqp_message_backlog") == 0
        ),
        60,
        "ten messages received and none waiting",
        process,
    )
    time.sleep(1)  # the last one settled
    peak = memory_mb(pid, "VmHWM")
    assert peak - before < 30, f"peak {peak:.0f} MB, {before:.0f} MB before"
    assert read_records(tmp_path) == []
    assert len(error_lines(process)) == 10
    assert all(
        "over --max-message-size 16 MiB (not read); dropped" in e for e in error_lines(process)
    )
    assert broker.count(names.queue) == 0


def test_a_slow_handler_keeps_heartbeats_and_probes_going(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--amqp-heartbeat", "1"))
    broker.publish(names.exchange, names.queue, [{"id": "slow", "sleep": 6}, {"id": "next"}])
    wait_until(
        lambda: metric(process, "hurricane_amqp_messages_received_total") >= 1, 10, "delivery"
    )
    # Several heartbeat intervals pass while the handler sleeps; the loop answers.
    for _ in range(8):
        began = time.monotonic()
        assert status(process.probe("/alive")) == 200
        assert time.monotonic() - began < 1.0
        assert status(process.probe("/ready")) == 200
        time.sleep(0.5)
    wait_until(lambda: handled_ids(tmp_path) == ["slow", "next"], 20, "both messages")
    assert metric(process, "hurricane_amqp_reconnects_total") == 0
    assert "lost the connection" not in process.output


def test_max_lifetime_counts_messages(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--max-lifetime", "3"))
    assert status(process.probe("/alive")) == 200
    broker.publish(names.exchange, names.queue, [{"id": n} for n in range(3)])
    wait_until(lambda: len(handled_ids(tmp_path)) == 3, 20, "three messages")
    assert status(process.probe("/alive")) == 200  # fails past, not at, the third
    broker.publish(names.exchange, names.queue, [{"id": 3}])
    wait_until(lambda: len(handled_ids(tmp_path)) == 4, 20, "the fourth message")
    wait_until(lambda: status(process.probe("/alive")) == 400, 10, "liveness to fail")
    response = requests.get(process.probe("/alive"), timeout=5)
    assert "max lifetime of 3 messages exceeded" in response.text


def test_lost_connection_without_reconnect_exits_with_a_clear_message(
    consume, broker, tmp_path, webhook_receiver
):
    names = broker.names()
    process = consume(*consumer_args(names, "--webhook-url", webhook_receiver.url))
    webhook_receiver.wait_for(lambda w: w["type"] == "startup" and w["status"] == "succeeded")
    assert status(process.probe("/ready")) == 200  # as the kubelet would have asked
    rabbitmqctl("close_all_connections", "test: cut the network")
    assert process.wait_exit(30) == 1
    lines = process.output.strip().splitlines()
    assert "lost the connection to the broker at 127.0.0.1:5672/" in lines[-1]
    assert "not reconnecting (--reconnect is off)" in lines[-1]
    webhook_receiver.wait_for(lambda w: w["type"] == "readiness" and w["status"] == "failed")


def test_reconnect_after_a_cut_connection(consume, broker, tmp_path, webhook_receiver):
    names = broker.names()
    process = consume(
        *consumer_args(names, "--reconnect", "--durable", "--webhook-url", webhook_receiver.url)
    )
    broker.publish(names.exchange, names.queue, [{"id": "before"}], persistent=True)
    wait_until(lambda: handled_ids(tmp_path) == ["before"], 20, "the first message")
    assert status(process.probe("/ready")) == 200
    rabbitmqctl("close_all_connections", "test: cut the network")
    webhook_receiver.wait_for(lambda w: w["type"] == "readiness" and w["status"] == "failed")
    wait_until(lambda: metric(process, "hurricane_amqp_reconnects_total") == 1, 30, "a reconnect")
    assert status(process.probe("/alive")) == 200
    wait_until(lambda: status(process.probe("/ready")) == 200, 10, "readiness again")
    broker.publish(names.exchange, names.queue, [{"id": "after"}], persistent=True)
    wait_until(lambda: handled_ids(tmp_path) == ["before", "after"], 20, "the later message")


def test_a_broker_restart_during_a_stream_loses_nothing(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--reconnect", "--durable", "--prefetch", "5"))
    broker.publish(
        names.exchange,
        names.queue,
        [{"id": n, "sleep": 0.02} for n in range(200)],
        persistent=True,
    )
    wait_until(lambda: len(read_records(tmp_path)) >= 20, 30, "the stream to flow")
    try:
        rabbitmqctl("stop_app")
        time.sleep(1)
        assert status(process.probe("/alive")) == 200
        assert status(process.probe("/ready")) == 400
    finally:
        rabbitmqctl("start_app")
    broker.publish(
        names.exchange, names.queue, [{"id": n} for n in range(200, 250)], persistent=True
    )
    wait_until(
        lambda: set(handled_ids(tmp_path)) >= set(range(250)), 90, "every message after the restart"
    )
    wait_until(lambda: broker.count(names.queue) == 0, 10, "an empty queue")
    assert metric(process, "hurricane_amqp_reconnects_total") >= 1
    counts = collections.Counter(handled_ids(tmp_path))
    # At least once: only what was in hand when the broker went away comes twice.
    assert sum(n - 1 for n in counts.values()) <= 5 + 1, counts.most_common(3)


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["no.such.Handler", "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1"], {},
         "cannot import the handler 'no.such.Handler'"),
        (["testapp.consumers.NotAHandler", "--queue", "q", "--exchange", "e",
          "--amqp-host", "127.0.0.1"], {},
         "is not a subclass of hurricane.amqp.basehandler.TopicHandler"),
        ([HANDLER, "--exchange", "e", "--amqp-host", "127.0.0.1", "--queue-type", "quorum"], {},
         "--queue-type quorum needs --queue (a queue the broker names is classic)"),
        ([HANDLER, "--exchange", "e", "--amqp-host", "127.0.0.1",
          "--dead-letter-exchange", "d"], {},
         "--dead-letter-exchange needs --queue (its dead letters are routed by name)"),
        (["testapp.consumers.OwnChannelHandler", "--queue", "q", "--exchange", "e",
          "--amqp-host", "127.0.0.1"], {},
         "OwnChannelHandler overrides on_channel_open(), a step of django-hurricane 1.6's "
         "pika plumbing that Hurricane's consumer does itself: override start_consuming() "
         "(calling super()) to act once consuming"),
        (["testapp.consumers.LegacyHooksHandler", "--queue", "q", "--exchange", "e",
          "--amqp-host", "127.0.0.1", "--queue-type", "quorum"], {},
         "--queue-type quorum cannot apply: LegacyHooksHandler overrides setup_queue() and "
         "declares the queue itself (drop the override, or --queue-type and declare what it "
         "sets in setup_queue())"),
        ([HANDLER, "--queue", "q", "--amqp-host", "127.0.0.1"], {},
         "no exchange given: pass --exchange or set HURRICANE_EXCHANGE"),
        (["--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1"], {},
         "no handler given"),
        ([HANDLER, "--queue", "q", "--exchange", "e"], {},
         "no amqp host given: pass --amqp-host or set AMQP_HOST"),
        ([HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1",
          "--prefetch", "0"], {},
         "invalid value '0' for --prefetch (from command line --prefetch): expected"),
        ([HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1",
          "--max-deliveries", "-1"], {},
         "invalid value '-1' for --max-deliveries (from command line --max-deliveries): "
         "expected a whole number (0 or more)"),
        ([HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1"],
         {"HURRICANE_MAX_MESSAGE_SIZE": "lots"},
         "invalid value 'lots' for --max-message-size (from environment "
         "HURRICANE_MAX_MESSAGE_SIZE): expected a size in bytes"),
        ([HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1",
          "--queue-type", "stream"], {},
         "invalid value 'stream' for --queue-type (from command line --queue-type): "
         "expected classic or quorum"),
        ([HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1"],
         {"AMQP_PASSWORD": "wrong"},
         "refused the credentials of user 'guest'"),
        ([HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1",
          "--amqp-vhost", "no-such-vhost"], {},
         "denied access to virtual host 'no-such-vhost'"),
        ([HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1",
          "--amqp-port", "1"], {},
         "cannot connect to the broker at 127.0.0.1:1/: Connection refused"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(tmp_path, args, env, expected):
    # A wrong password stays wrong with --reconnect: it is not retried for ever.
    if "AMQP_PASSWORD" in env:
        args = [*args, "--reconnect"]
    result = subprocess.run(
        [sys.executable, "manage.py", "consume", *args, "--probe-port", str(free_port())],
        cwd=TEST_PROJECT,
        env=base_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    last_line = output.strip().splitlines()[-1]
    assert expected in last_line, output
    assert "Traceback" not in output


def start_amqp_client_script(names, tmp_path: Path) -> subprocess.Popen:
    """A script that runs the recording handler with AMQPClient(...).run(reconnect=True),
    as users of django-hurricane 1.6 start it themselves."""
    script = (
        "import django; django.setup()\n"
        "from hurricane.amqp.worker import AMQPClient\n"
        "from testapp.consumers import RecordingHandler\n"
        f"client = AMQPClient(RecordingHandler, {names.queue!r}, {names.exchange!r}, "
        "'127.0.0.1', 5672, '/')\n"
        "assert client._consumer is client.consumer\n"
        "client.run(reconnect=True)\n"
        "print('run returned', flush=True)\n"
    )
    env = base_env(
        tmp_path,
        DJANGO_SETTINGS_MODULE="testproject.settings",
        TEST_RECORD_FILE=str(tmp_path / "records.jsonl"),
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=TEST_PROJECT,
        env={**env, "PYTHONPATH": os.pathsep.join([str(TEST_PROJECT), env["PYTHONPATH"]])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("stopped_by", ["SIGTERM", "stop() in on_message"])
def test_amqp_client_works_for_users_who_start_it_themselves(broker, tmp_path, stopped_by):
    names = broker.names()
    process = start_amqp_client_script(names, tmp_path)
    try:
        wait_until(lambda: _queue_exists(broker, names.queue), 20, "the queue")
        broker.publish(names.exchange, names.queue, [{"id": n} for n in range(10)])
        wait_until(lambda: len(handled_ids(tmp_path)) == 10, 20, "ten messages")
        if stopped_by == "SIGTERM":
            process.send_signal(signal.SIGTERM)
        else:
            broker.publish(names.exchange, names.queue, [{"id": "last", "stop": True}])
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "run returned" in output
    assert sorted(handled_ids(tmp_path)) == list(range(10))


def _queue_exists(broker, queue: str) -> bool:
    try:
        broker.count(queue)
    except broker.pika.exceptions.ChannelClosedByBroker:
        return False
    return True


def test_reconnect_delays_are_capped_and_jittered():
    from hurricane.amqp.worker import RECONNECT_MAX_DELAY, reconnect_delay

    first = [reconnect_delay(0) for _ in range(50)]
    assert all(0.25 <= delay <= 0.5 for delay in first)
    assert len(set(first)) > 1  # jittered
    assert all(reconnect_delay(attempt) <= RECONNECT_MAX_DELAY for attempt in range(100))
    assert reconnect_delay(50) >= RECONNECT_MAX_DELAY / 2


def test_the_count_of_deliveries_on_classic_queues_is_bounded():
    """The consumer's own count keys a message by its message_id, else by its content
    (broker headers aside), and remembers at most REMEMBERED_MESSAGES of them."""
    from pika.spec import Basic, BasicProperties

    from hurricane.amqp.deliveries import REMEMBERED_MESSAGES, DeliveryCounter

    counter = DeliveryCounter(limit=5, from_header=False)

    def deliver(body: str, redelivered: bool = True, **properties):
        method = Basic.Deliver(redelivered=redelivered, exchange="e", routing_key="k")
        return counter.delivered(method, BasicProperties(**properties), body.encode())

    counter.returned(deliver("poison", redelivered=False), failed=True)
    for number in (2, 3):
        delivery = deliver("poison")
        assert delivery.number == number
        counter.returned(delivery, failed=True)
    assert deliver("poison", headers={"x-delivery-count": 7}).number == 4
    assert deliver("poison", redelivered=False).number == 1  # a new one, alike
    assert deliver("other").number == 2  # redelivered, not seen here: at least the second
    counter.returned(deliver("a", message_id="m-1"), failed=True)
    assert deliver("b", message_id="m-1").number == 3
    for n in range(REMEMBERED_MESSAGES):
        counter.returned(deliver(f"message {n}"), failed=True)
    assert deliver("poison").number == 2  # forgotten, the oldest first
    assert deliver(f"message {REMEMBERED_MESSAGES - 1}").number == 3


def test_no_probe_and_no_metrics(consume, broker, tmp_path):
    names = broker.names()
    quiet_port = free_port()
    process = consume(
        *consumer_args(names, "--no-probe", "--probe-port", str(quiet_port)), wait=False
    )
    process.wait_for(lambda: "Consuming" in process.output, 20, "consuming")
    broker.publish(names.exchange, names.queue, [{"id": "unprobed"}])
    wait_until(lambda: handled_ids(tmp_path) == ["unprobed"], 20, "the message")
    assert not port_open(quiet_port)

    process = consume(*consumer_args(names, "--no-metrics"))
    assert status(process.probe("/metrics")) == 404
    assert status(process.probe("/ready")) == 200


def test_handler_option_custom_dead_letter_queue_and_no_requeue_on_error(consume, broker, tmp_path):
    names = broker.names()
    custom_queue = f"{names.queue}.custom-dead"
    broker.queues.append(custom_queue)
    process = consume(
        "--handler",
        HANDLER,
        *consumer_args(names)[1:],
        "--dead-letter-exchange",
        names.dead_letter_exchange,
        "--dead-letter-queue",
        custom_queue,
        "--requeue-on-error",
        "false",
    )
    broker.publish(
        names.exchange,
        names.queue,
        [{"id": "rejected", "reject": True}, {"id": "bad", "raise": True}],
    )
    # A reject goes to the named dead-letter queue, and so does a failure, at once: no
    # retries with --requeue-on-error false.
    wait_until(lambda: broker.count(custom_queue) == 2, 20, "the dead letters")
    assert sorted(m["id"] for m in broker.take_all(custom_queue)) == ["bad", "rejected"]
    assert outcomes(tmp_path, "bad", "raised") == 1
    [line] = error_lines(process)
    assert "on_message raised (--requeue-on-error is false); dead-lettered" in line
    assert "RuntimeError: handler failed on message bad" in process.output
    assert (
        metric(process, "hurricane_amqp_messages_given_up_total", {"reason": "handler_error"}) == 1
    )


def test_the_handler_is_given_once(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "consume", HANDLER, "--handler", "other.Handler"],
        cwd=TEST_PROJECT,
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "the handler is given twice: as HANDLER and with --handler" in result.stderr


def test_graceful_timeout_bounds_the_wait_for_the_message_in_hand(consume, broker, tmp_path):
    names = broker.names()
    process = consume(*consumer_args(names, "--graceful-timeout", "1"))
    broker.publish(names.exchange, names.queue, [{"id": "endless", "sleep": 30}])
    wait_until(
        lambda: metric(process, "hurricane_amqp_messages_received_total") == 1, 20, "delivery"
    )
    began = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait_exit(20) == 0
    assert time.monotonic() - began < 10
    assert "its message goes back to the queue" in process.output
    # Not acknowledged, so the broker keeps it for the next consumer.
    wait_until(lambda: broker.count(names.queue) == 1, 10, "the message back in the queue")
    assert handled_ids(tmp_path) == []


# -- the network between consumer and broker fails --------------------------------------------


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A proxy in front of the real broker, for cutting or freezing the connection."""
    running = TcpProxy(5672)
    yield running
    running.close()


def through(proxy: TcpProxy, args: list[str]) -> list[str]:
    """``consumer_args`` with the broker's port replaced by the proxy's."""
    position = args.index("--amqp-port") + 1
    return [*args[:position], str(proxy.port), *args[position + 1 :]]


def test_messages_received_before_a_lost_connection_are_not_run_while_it_is_down(
    consume, broker, tmp_path, proxy
):
    """The broker delivers every unacknowledged message again after a reconnect: the
    prefetched ones the handler had not begun must not run in the meantime (with no
    channel to acknowledge them on), or each would run twice."""
    names = broker.names()
    process = consume(*through(proxy, consumer_args(names, "--reconnect", "--prefetch", "10")))
    broker.publish(
        names.exchange, names.queue, [{"id": "slow", "sleep": 1}] + [{"id": n} for n in range(5)]
    )
    wait_until(
        lambda: metric(process, "hurricane_amqp_messages_received_total") == 6, 20, "the prefetch"
    )
    # The connection goes away while "slow" is in hand, and stays away past its end.
    proxy.refuse()
    proxy.cut()
    process.wait_for(lambda: "lost the connection" in process.output, 10, "the loss")
    time.sleep(2)
    assert handled_ids(tmp_path) == ["slow"], "the handler ran messages of the lost channel"
    proxy.resume()
    wait_until(lambda: len(read_records(tmp_path)) >= 7, 30, "every message after the reconnect")
    time.sleep(0.5)
    records = read_records(tmp_path)
    again = [r for r in records if r["id"] != "slow"]
    assert sorted(r["id"] for r in again) == [0, 1, 2, 3, 4], records
    assert all(r["redelivered"] for r in again), records
    # "slow" was in hand: its acknowledgement was lost with the channel, so it comes once more.
    assert [r["redelivered"] for r in records if r["id"] == "slow"] == [False, True]
    assert "Dropped 5 messages not yet begun from the lost channel" in process.output
    wait_until(lambda: broker.count(names.queue) == 0, 10, "an empty queue")


def test_sigterm_with_a_broker_that_stopped_answering_ends_within_the_grace_period(
    consume, broker, tmp_path, proxy
):
    names = broker.names()
    process = consume(*through(proxy, consumer_args(names, "--graceful-timeout", "2")))
    proxy.freeze()  # connection open, nothing gets through: a hung host
    began = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait_exit(30) == 0
    # --graceful-timeout, plus at most 2 s each for the cancel and the close to be confirmed.
    assert time.monotonic() - began < 2 + 2 + 2 + 2, process.output
    assert "The broker did not confirm closing the connection within 2 s" in process.output
    assert "Traceback" not in process.output


def test_broker_failures_are_one_line_each_without_pikas_own_records(tmp_path):
    """pika logs each failed connect in several ERROR records; Hurricane's own line
    says it all. --log-level DEBUG shows pika's records again."""
    refused = [HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1"]
    refused += ["--amqp-port", str(free_port()), "--probe-port", str(free_port())]
    env = base_env(tmp_path, TEST_RECORD_FILE=str(tmp_path / "records.jsonl"))

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "consume", *refused, *extra],
            cwd=TEST_PROJECT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    quiet = run()
    assert quiet.returncode == 1
    output = quiet.stdout + quiet.stderr
    assert "pika" not in output, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Connection refused" in errors[0], output
    loud = run("--log-level", "DEBUG")
    assert loud.returncode == 1
    assert " ERROR pika." in loud.stdout + loud.stderr


def test_sigterm_while_connecting_to_a_hanging_broker_is_a_clean_exit(consume, tmp_path):
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(4)  # accepts (in the kernel), never answers
    try:
        args = [HANDLER, "--queue", "q", "--exchange", "e", "--amqp-host", "127.0.0.1"]
        args += ["--amqp-port", str(hanging.getsockname()[1])]
        process = consume(*args, wait=False)
        process.wait_for(lambda: "Connecting to" in process.output, 20, "the connect")
        time.sleep(0.5)
        process.signal(signal.SIGTERM)
        assert process.wait_exit(10) == 0
    finally:
        hanging.close()
    assert "Traceback" not in process.output, process.output
    assert " ERROR " not in process.output, process.output


# -- django-hurricane 1.6's consumer API ------------------------------------------------------


def passive_declare_refusal(broker, queue: str) -> int | None:
    """The broker's reply code to another connection looking for ``queue``, or None
    if it may use it."""
    try:
        broker.count(queue)
    except broker.pika.exceptions.ChannelClosedByBroker as refusal:
        return refusal.reply_code
    return None


def test_without_queue_the_broker_names_a_queue_exclusive_to_the_connection(
    consume, broker, tmp_path
):
    names = broker.names()
    args = [HANDLER, "--exchange", names.exchange, "--routing-key", "orders.*"]
    process = consume(*args, "--amqp-host", "127.0.0.1")
    queue = re.search(r"Consuming '(amq\.gen-[^']+)'", process.output)
    assert queue, process.output
    assert "named by the broker, exclusive to this connection" in process.output
    broker.publish(names.exchange, "orders.created", [{"id": n} for n in range(5)])
    wait_until(lambda: len(handled_ids(tmp_path)) == 5, 20, "five messages")
    assert passive_declare_refusal(broker, queue[1]) == 405  # RESOURCE_LOCKED: exclusive
    process.signal(signal.SIGTERM)
    assert process.wait_exit(30) == 0, process.output
    assert passive_declare_refusal(broker, queue[1]) == 404  # gone with its connection
    assert sorted(handled_ids(tmp_path)) == list(range(5))


def test_a_handler_overriding_1_6_hooks_gets_their_effect(consume, broker, tmp_path):
    """setup_exchange (its own exchange type), setup_queue (its own queue arguments),
    on_bindok, _prefetch_count set in __init__, stop() and on_connection_closed: each
    runs, as in django-hurricane 1.6."""
    names = broker.names()
    handler = "testapp.consumers.LegacyHooksHandler"
    process = consume(handler, *consumer_args(names, "--durable")[1:])
    connection = broker.connection()
    try:  # the queue is the handler's: durable, with its x-max-length
        channel = connection.channel()
        channel.queue_declare(names.queue, durable=True, arguments={"x-max-length": 1000})
        with pytest.raises(broker.pika.exceptions.ChannelClosedByBroker, match="x-max-length"):
            connection.channel().queue_declare(names.queue, durable=True)
    finally:
        connection.close()
    # Prefetch 3 (the handler's, not the default 10): while the first message sleeps,
    # the broker keeps all but three of them.
    broker.publish(names.exchange, names.queue, [{"id": 0, "sleep": 4}])
    broker.publish(names.exchange, names.queue, [{"id": n} for n in range(1, 10)])
    wait_until(lambda: broker.count(names.queue) == 7, 10, "three messages out")
    wait_until(lambda: len(handled_ids(tmp_path)) == 10, 30, "every message")
    # The exchange is the handler's fanout: a routing key that names no queue arrives.
    broker.publish(names.exchange, "no.such.key", [{"id": 10}])
    wait_until(lambda: len(handled_ids(tmp_path)) == 11, 30, "the fanout message")
    process.signal(signal.SIGTERM)
    assert process.wait_exit(30) == 0, process.output
    hooks = [r["id"] for r in read_records(tmp_path) if r["outcome"] == "hook"]
    expected = [f"exchange {names.exchange}", f"bound {names.queue}", "stop", "connection closed"]
    assert hooks == expected, hooks


def test_stop_from_the_handler_ends_consume_after_the_message(consume, broker, tmp_path):
    """django-hurricane 1.6's stop(), called in on_message: no more messages are
    handled, the process exits 0 and the rest stays in the queue."""
    names = broker.names()
    process = consume(*consumer_args(names, "--prefetch", "1"))
    broker.publish(names.exchange, names.queue, [{"id": 0}, {"id": 1, "stop": True}])
    broker.publish(names.exchange, names.queue, [{"id": n} for n in range(2, 6)])
    assert process.wait_exit(30) == 0, process.output
    records = read_records(tmp_path)
    assert [r["id"] for r in records] == [0, 1], records
    assert broker.count(names.queue) == 4


def test_queue_depth_and_unsettled_messages_for_autoscaling(consume, broker, tmp_path):
    """The signals a scaler reads: the messages ready in the queue as the broker
    reports them (asked every few seconds), and those delivered to this consumer and
    not yet settled (prefetched, and the one in hand)."""
    names = broker.names()
    process = consume(*consumer_args(names, "--prefetch", "3"))
    wait_until(
        lambda: metric(process, "hurricane_amqp_queue_messages") == 0,
        15,
        "the empty queue reported",
        process,
    )
    # The first message holds the handler 20 s; three are delivered, seven wait.
    broker.publish(
        names.exchange, names.queue, [{"id": 0, "sleep": 20}, *({"id": n} for n in range(1, 10))]
    )
    wait_until(
        lambda: (
            metric(process, "hurricane_amqp_queue_messages") == 7
            and metric(process, "hurricane_amqp_messages_unsettled") == 3
        ),
        15,
        "seven ready in the queue and three unsettled",
        process,
    )
    assert metric(process, "hurricane_amqp_message_backlog") == 2
    wait_until(lambda: len(read_records(tmp_path)) == 10, 60, "all ten handled", process)
    wait_until(
        lambda: (
            metric(process, "hurricane_amqp_queue_messages") == 0
            and metric(process, "hurricane_amqp_messages_unsettled") == 0
        ),
        15,
        "the queue and the consumer empty",
        process,
    )
