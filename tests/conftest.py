"""Shared test harness: real ``manage.py serve`` processes on free ports, killed at
the end of every test, and small HTTP helpers."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests
from psycopg import sql
from support.ports import free_port as support_free_port

ROOT = Path(__file__).resolve().parent.parent
TEST_PROJECT = ROOT / "tests" / "testproject"
DEMO_PROJECT = ROOT / "examples" / "demo"
ENTRYPOINT = ROOT / "entrypoint" / "hurricane-entrypoint"
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def delete_celery_queue(queue: str) -> None:
    """Delete a queue a Celery worker of the tests declared, and the exchange of the
    same name Celery declared with it (py-amqp comes with Celery, in the test extra)."""
    import amqp

    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    try:
        channel = connection.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(queue)
    finally:
        connection.close()


def free_port() -> int:
    """A port nothing listens on, whose neighbour (the default probe port) is free too."""
    return support_free_port(count=2)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ServeProcess:
    """One ``manage.py serve`` (or ``consume``) process; output goes to a file the test
    can read."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        port: int | None,
        probe_port: int | None,
        command: str = "serve",
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.command = command
        self.port = port
        self.probe_port = probe_port
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "manage.py", command, *args],
            cwd=cwd,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def probe(self, path: str) -> str:
        return f"http://127.0.0.1:{self.probe_port}{path}"

    def wait_for(self, condition, timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException, OSError):
                if condition():
                    return
            if self.process.poll() is not None and not condition_allows_exit(condition):
                raise AssertionError(
                    f"{self.command} exited with {self.process.returncode} before {what}:\n"
                    f"{self.output}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output}")

    def wait_started(self, timeout: float = 30.0) -> ServeProcess:
        if self.probe_port is None:
            self.wait_for(
                lambda: requests.get(self.url("/hello/"), timeout=2).status_code == 200,
                timeout,
                "the app to answer",
            )
        else:
            self.wait_for(
                lambda: requests.get(self.probe("/startup"), timeout=2).status_code == 200,
                timeout,
                "the startup probe to answer 200",
            )
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.command} did not exit within {timeout} s:\n{self.output}"
            ) from None

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log_file.close()


def wait_until(condition, timeout: float = 20.0, what: str = "condition", server=None) -> None:
    """Poll ``condition`` until it is true; connection errors count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.05)
    log = f"\nserver log:\n{server.output}" if server is not None else ""
    raise AssertionError(f"timed out waiting for {what}{log}")


def status(url: str, method: str = "GET", **kwargs) -> int:
    return requests.request(method, url, timeout=10, **kwargs).status_code


def condition_allows_exit(condition) -> bool:
    return getattr(condition, "allows_exit", False)


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HURRICANE_", "TEST_", "DJANGO_"))
    }
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            "TEST_SQLITE": str(tmp_path / "db.sqlite3"),
            "TEST_STATIC_ROOT": str(tmp_path / "static"),
            "TEST_MEDIA_ROOT": str(tmp_path / "media"),
        }
    )
    env.update(extra)
    return env


def run_serve(
    tmp_path: Path, *args: str, port: int | None = None, **env: str
) -> tuple[int, subprocess.CompletedProcess]:
    """``manage.py serve`` on a free port (or ``port``) run to its end: for options
    that must stop it before it serves. Returns the port and the finished process."""
    port = port or free_port()
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(port), *args],
        cwd=TEST_PROJECT,
        env=base_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return port, result


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """``serve(*args, env={...}, migrate=True)`` starts the test project on free ports.

    Unless the test passes ``--port``/``--probe-port`` itself, both are chosen here.
    With ``migrate`` (default), the SQLite database is migrated first.
    """
    processes: list[ServeProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        migrate: bool = True,
        cwd: Path = TEST_PROJECT,
        wait: bool = True,
    ) -> ServeProcess:
        full_env = base_env(tmp_path, **(env or {}))
        if migrate:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "-v0"], cwd=cwd, env=full_env, check=True
            )
        args_list = list(args)
        port = probe_port = None
        if "--port" in args_list:
            port = int(args_list[args_list.index("--port") + 1])
        elif "HURRICANE_PORT" not in full_env:
            port = free_port()
            args_list += ["--port", str(port)]
        else:
            port = int(full_env["HURRICANE_PORT"])
        if "--no-probe" in args_list:
            probe_port = None
        elif "--probe-port" in args_list:
            probe_port = int(args_list[args_list.index("--probe-port") + 1])
        else:
            probe_port = port + 1
        log_path = tmp_path / f"serve-{len(processes)}.log"
        process = ServeProcess(args_list, full_env, cwd, log_path, port, probe_port)
        processes.append(process)
        if wait:
            process.wait_started()
        return process

    yield start
    for process in processes:
        process.kill()


HANDLER = "testapp.consumers.RecordingHandler"


def consumer_args(names, *extra: str) -> list[str]:
    """``consume``'s arguments for the test project's recording handler on the
    broker's queue and exchange ``names``, then ``extra``."""
    return [
        HANDLER,
        "--queue",
        names.queue,
        "--exchange",
        names.exchange,
        "--amqp-host",
        "127.0.0.1",
        "--amqp-port",
        "5672",
        *extra,
    ]


@pytest.fixture
def consume(tmp_path: Path) -> Iterator:
    """``consume(*args, env={...})`` starts ``manage.py consume`` on the test project,
    with its probes on a free port (unless the test passes ``--probe-port``). Handled
    messages are recorded in ``tmp_path / "records.jsonl"`` (see testapp.consumers)."""
    processes: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> ServeProcess:
        full_env = base_env(tmp_path, TEST_RECORD_FILE=str(tmp_path / "records.jsonl"))
        full_env.update(env or {})
        args_list = list(args)
        if "--probe-port" in args_list:
            probe_port = int(args_list[args_list.index("--probe-port") + 1])
        else:
            probe_port = free_port()
            args_list += ["--probe-port", str(probe_port)]
        log_path = tmp_path / f"consume-{len(processes)}.log"
        process = ServeProcess(
            args_list, full_env, TEST_PROJECT, log_path, None, probe_port, command="consume"
        )
        processes.append(process)
        if wait:
            process.wait_started()
        return process

    yield start
    for process in processes:
        process.kill()


def read_records(tmp_path: Path) -> list[dict]:
    """The messages the test handler recorded, in order. Only whole lines: a line the
    consumer is writing this instant can be read half-written."""
    path = tmp_path / "records.jsonl"
    if not path.exists():
        return []
    *whole, _being_written = path.read_text().split("\n")
    return [json.loads(line) for line in whole if line.strip()]


class Broker:
    """The real RabbitMQ on 127.0.0.1:5672. Every test gets names of its own, and
    the queues and exchanges named here are deleted at the end."""

    def __init__(self) -> None:
        import pika

        self.pika = pika
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        try:
            self.connection().close()
        except pika.exceptions.AMQPError as error:
            raise AssertionError(
                f"RabbitMQ must answer on 127.0.0.1:5672 (.ci/run starts it): {error!r}"
            ) from None

    def connection(self):
        return self.pika.BlockingConnection(
            self.pika.ConnectionParameters("127.0.0.1", 5672, connection_attempts=10, retry_delay=1)
        )

    def names(self) -> SimpleNamespace:
        """Fresh names: ``queue``, ``exchange``, ``dead_letter_exchange`` and
        ``dead_letter_queue`` (the consumer's default name for it)."""
        unique = uuid.uuid4().hex[:10]
        names = SimpleNamespace(
            queue=f"test.{unique}",
            exchange=f"test-exchange.{unique}",
            dead_letter_exchange=f"test-dead.{unique}",
            dead_letter_queue=f"test.{unique}.dead-letter",
        )
        self.queues += [names.queue, names.dead_letter_queue]
        self.exchanges += [names.exchange, names.dead_letter_exchange]
        return names

    def publish(
        self,
        exchange: str,
        routing_key: str,
        messages: list,
        persistent: bool = False,
        **properties,
    ) -> None:
        """Publish each message as JSON (bytes as they are), with confirms; ``properties``
        are pika's BasicProperties (``message_id="..."``)."""
        basic_properties = self.pika.BasicProperties(
            delivery_mode=2 if persistent else 1, **properties
        )
        connection = self.connection()
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for message in messages:
                body = message if isinstance(message, bytes) else json.dumps(message).encode()
                channel.basic_publish(exchange, routing_key, body, basic_properties, mandatory=True)
        finally:
            connection.close()

    def count(self, queue: str) -> int:
        """Messages ready in the queue (not counting those delivered and unacked)."""
        connection = self.connection()
        try:
            return connection.channel().queue_declare(queue, passive=True).method.message_count
        finally:
            connection.close()

    def take_all(self, queue: str) -> list[dict]:
        """Take (and acknowledge) every message ready in the queue."""
        connection = self.connection()
        taken = []
        try:
            channel = connection.channel()
            while True:
                method, _, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return taken
                taken.append(json.loads(body))
        finally:
            connection.close()

    def cleanup(self) -> None:
        connection = self.connection()
        try:
            channel = connection.channel()
            for queue in self.queues:
                channel.queue_delete(queue)
            for exchange in self.exchanges:
                channel.exchange_delete(exchange)
        finally:
            connection.close()


@pytest.fixture
def broker() -> Iterator[Broker]:
    broker = Broker()
    yield broker
    broker.cleanup()


class WebhookReceiver:
    """A real HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[dict] = []
        self.headers: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                receiver.received.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in list(self.received):
                if predicate(item):
                    return item
            time.sleep(0.05)
        raise AssertionError(f"no matching webhook; received: {self.received}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named database on the local PostgreSQL, dropped afterwards.
    If PostgreSQL does not answer, this raises: the test fails (never skips)."""
    name = f"hurricane_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=10) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- the image's entrypoint, run here without a container ---------------------------


def entrypoint_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test environment without the host's AMQP_* and *_FILE variables (the
    entrypoint would resolve the latter), on the demo project with its files in tmp."""
    env = {
        name: value
        for name, value in base_env(tmp_path).items()
        if not name.startswith("AMQP_") and not name.endswith("_FILE")
    }
    env.update(
        HURRICANE_APP_DIR=str(DEMO_PROJECT),
        DEMO_DATABASE=str(tmp_path / "demo.sqlite3"),
        DEMO_STATIC_ROOT=str(tmp_path / "static"),
    )
    env.update(extra)
    return env


def kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@dataclass(frozen=True)
class Finished:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def run_entrypoint(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> Finished:
    """Run the entrypoint to its end; its own session, killed if it overstays."""
    process = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_group(process)
    return Finished(process.pid, process.returncode, stdout, stderr)


class Running:
    """An entrypoint started in the background, its output in files."""

    def __init__(self, args: list[str], env: dict[str, str], tmp_path: Path, index: int) -> None:
        self.stdout_path = tmp_path / f"entrypoint-{index}.out"
        self.stderr_path = tmp_path / f"entrypoint-{index}.err"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(ENTRYPOINT), *args],
                env=env,
                cwd=tmp_path,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException, OSError):
                if condition():
                    return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"exited with {self.process.returncode} before {what}:\n{self.output}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output}")

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit {timeout} s after SIGTERM:\n{self.output}") from None


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """``start(args, env)`` runs the entrypoint in the background; killed at the end."""
    started: list[Running] = []

    def run(args: list[str], env: dict[str, str]) -> Running:
        started.append(Running(args, env, tmp_path, len(started)))
        return started[-1]

    yield run
    for running in started:
        kill_group(running.process)
