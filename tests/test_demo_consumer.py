"""The demo project's consumer (``notes.consumers.NoteHandler``) on the real RabbitMQ:
text becomes a note; a message that is not UTF-8 is rejected with one log line."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from conftest import DEMO_PROJECT, ServeProcess, base_env, free_port, wait_until


@pytest.fixture
def demo_consumer(tmp_path, broker):
    """``consume notes.consumers.NoteHandler`` on fresh names, with a dead-letter
    exchange, its database migrated; yields the process, the names and the database."""
    names = broker.names()
    database = tmp_path / "demo.sqlite3"
    env = base_env(tmp_path, DEMO_DATABASE=str(database), DEMO_STATIC_ROOT=str(tmp_path / "st"))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=DEMO_PROJECT, env=env, check=True
    )
    probe_port = free_port()
    args = ["notes.consumers.NoteHandler", "--queue", names.queue, "--exchange", names.exchange]
    args += ["--dead-letter-exchange", names.dead_letter_exchange]
    args += ["--amqp-host", "127.0.0.1", "--amqp-port", "5672", "--probe-port", str(probe_port)]
    process = ServeProcess(
        args, env, DEMO_PROJECT, tmp_path / "consume.log", None, probe_port, command="consume"
    )
    try:
        process.wait_started()
        yield process, names, database
    finally:
        process.kill()


def publish_raw(broker, exchange: str, routing_key: str, bodies: list[bytes]) -> None:
    connection = broker.connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(exchange, routing_key, body, mandatory=True)
    finally:
        connection.close()


def notes(database) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [text for (text,) in connection.execute("SELECT text FROM notes_note ORDER BY id")]


def test_a_message_that_is_not_utf8_is_rejected_with_one_log_line(demo_consumer, broker):
    process, names, database = demo_consumer
    not_text = b"PRIVATEBYTES\xff\xfe and more"
    publish_raw(broker, names.exchange, names.queue, [not_text, "café".encode()])
    # Handled in order: once the text is a note, the message before it was handled.
    wait_until(lambda: notes(database) == ["café"], 20, "the note", process)
    wait_until(lambda: broker.count(names.dead_letter_queue) == 1, 10, "the dead letter")

    lines = [line for line in process.output.splitlines() if "UTF-8" in line]
    assert len(lines) == 1, process.output
    assert re.search(
        rf"WARNING notes\.consumers Rejected a message that is not UTF-8 text \(routing key "
        rf"'{re.escape(names.queue)}', {len(not_text)} bytes, invalid at byte 12\); "
        r"dead-lettered$",
        lines[0],
    ), lines[0]
    assert "PRIVATEBYTES" not in process.output
    assert "Traceback" not in process.output

    connection = broker.connection()
    try:
        _, _, dead = connection.channel().basic_get(names.dead_letter_queue, auto_ack=True)
    finally:
        connection.close()
    assert dead == not_text
