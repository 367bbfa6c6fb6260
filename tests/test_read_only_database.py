"""A SQLite database on a read-only file system (a container's read-only root, the
usual way Kubernetes runs pods): serve and consume say so, with the fix, in the
migration wait's repeating line and in readiness's line. Never a silent wait.

The folder is made read-only the way a container's root is: a read-only mount, in a
mount namespace of the server's own (unshare), so nothing outside the test sees it."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from conftest import TEST_PROJECT, ServeProcess, base_env, consumer_args, free_port


def read_only(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs the rest with ``folder`` mounted read-only."""
    folder.mkdir()
    return (
        "unshare",
        "--mount",
        "sh",
        "-c",
        'mount -t tmpfs -o ro none "$0" && exec "$@"',
        str(folder),
    )


def hint(database: Path) -> str:
    return (
        f"the SQLite database {database} cannot be written: {database.parent} is on a "
        "read-only file system. SQLite writes its file and a journal beside it: mount a "
        "writable volume on that folder"
    )


def start(tmp_path: Path, command: str, args: list[str], probe_port: int, **env: str):
    folder = tmp_path / "readonly"
    full_env = base_env(tmp_path, TEST_SQLITE=str(folder / "db.sqlite3"), **env)
    return ServeProcess(
        args, full_env, TEST_PROJECT, tmp_path / f"{command}.log", None, probe_port,
        command=command, prefix=read_only(folder),
    )  # fmt: skip


def test_the_migration_wait_says_why_and_keeps_saying_it(tmp_path):
    port, probe_port = free_port(), free_port()
    server = start(
        tmp_path, "serve",
        ["--port", str(port), "--probe-port", str(probe_port), "--check-migrations-apply"],
        probe_port,
    )  # fmt: skip
    database = tmp_path / "readonly" / "db.sqlite3"
    try:
        server.wait_for(lambda: hint(database) in server.output, 20, "the reason")
        assert (
            "Waiting for migrations: Database command execution has failed with unable to "
            f"open database file (database 'default'): {hint(database)}"
        ) in server.output
        assert requests.get(server.probe("/startup"), timeout=5).status_code == 400
        # unchanged, it is said again, with how long the wait has lasted
        server.wait_for(lambda: "Still waiting for migrations after" in server.output, 45, "again")
        assert "Still waiting for migrations after 3" in server.output
    finally:
        server.kill()


def test_serves_readiness_names_the_read_only_file_system(tmp_path):
    port, probe_port = free_port(), free_port()
    server = start(
        tmp_path, "serve", ["--port", str(port), "--probe-port", str(probe_port)], probe_port
    )
    try:
        server.wait_started()
        assert requests.get(server.probe("/ready"), timeout=5).status_code == 400
        database = tmp_path / "readonly" / "db.sqlite3"
        server.wait_for(lambda: hint(database) in server.output, 10, "the readiness line")
        assert (
            "Readiness: failing: database 'default' does not answer: unable to open "
            f"database file; {hint(database)}"
        ) in server.output
    finally:
        server.kill()


def test_consumes_readiness_names_the_read_only_file_system(tmp_path, broker):
    probe_port = free_port()
    names = broker.names()
    consumer = start(
        tmp_path, "consume", [*consumer_args(names), "--probe-port", str(probe_port)], probe_port,
        TEST_RECORD_FILE=str(tmp_path / "records.jsonl"),
    )  # fmt: skip
    try:
        consumer.wait_started()
        deadline = time.monotonic() + 10
        while requests.get(consumer.probe("/ready"), timeout=5).status_code != 400:
            assert time.monotonic() < deadline, consumer.output
            time.sleep(0.1)
        database = tmp_path / "readonly" / "db.sqlite3"
        consumer.wait_for(lambda: hint(database) in consumer.output, 10, "the readiness line")
        assert "Readiness: failing: database 'default' does not answer: unable to open" in (
            consumer.output
        )
    finally:
        consumer.kill()
