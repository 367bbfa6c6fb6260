"""Drivers: a real process (``manage.py serve``, ``manage.py consume``, the webhook
receiver) started from a test, whose output the test reads line by line.

A start returns once the process serves (its ready line is in the output), or has
exited, or :data:`STARTUP_TIMEOUT` has passed: a test then reads a server that is
up, not one still starting. A stop ends the process and what it started, and waits
for it, so that the next test finds the ports free.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from hurricane.testing.actors import TestPublisher

MANAGE_FILE = "manage.py"
# Seconds a start waits for the process to serve (or to exit).
STARTUP_TIMEOUT = 30.0
# get_output(read_all=True) reads until the process has been quiet this long.
QUIET_PERIOD = 0.5
# Seconds a stop waits after SIGTERM before it kills.
STOP_TIMEOUT = 30.0


class BusyPortException(Exception):
    """A port the driver needs is taken by another process."""


def coverage_installed() -> bool:
    return importlib.util.find_spec("coverage") is not None


def option_value(params: Sequence[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``params`` (``--port 8000`` or ``--port=8000``)."""
    for index, param in enumerate(params):
        if param == flag and index + 1 < len(params):
            return params[index + 1]
        if param.startswith(flag + "="):
            return param.partition("=")[2]
    return None


class HurricaneBaseDriver:
    """Starts one process, collects its output (stdout and stderr, line by line) and
    stops it."""

    #: Ports that must be free for this driver's process.
    ports: Sequence[int] = (8000, 8001)
    #: The command without and with coverage measurement (``coverage run``).
    base_command: Sequence[str] = ()
    coverage_base_command: Sequence[str] = ()
    #: Output that says the process serves.
    test_string = ""

    def __init__(self) -> None:
        for port in self.ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # As a server binds: connections of a server stopped a moment ago
                # (TIME_WAIT) do not make the port busy, a listening socket does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise BusyPortException(f"Port {port} already in use.") from None
        self.proc: subprocess.Popen | None = None
        self.log_lines: list[str] = []
        self.q: queue.Queue = queue.Queue()
        self.port = 8000
        self.probe_port = 8001

    # -- what tests call -------------------------------------------------------------------

    def get_server_host_port(self, probe_port: bool = False) -> tuple[str, int] | tuple[None, None]:
        if self.proc is None:
            return None, None
        return "localhost", self.probe_port if probe_port else self.port

    def get_output(self, read_all: bool = False) -> tuple[str, str] | None:
        """With ``read_all``: everything the process wrote since it started, once it
        has been quiet for QUIET_PERIOD, as ``(output, "")``. Without: the next line
        within a second, as ``(line, "")``, or None."""
        if read_all:
            self._collect(QUIET_PERIOD)
            return "".join(self.log_lines), ""
        try:
            line = self.q.get(timeout=1)
        except queue.Empty:
            return None
        self.log_lines.append(line)
        return line, ""

    def _get_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment the process gets: this one, with ``env`` over it."""
        environment = dict(os.environ)
        environment.update(env or {})
        return environment

    # -- starting and stopping ---------------------------------------------------------------

    def _command(self, params: Sequence[str], coverage: bool) -> list[str]:
        if coverage and self.coverage_base_command and coverage_installed():
            return [*self.coverage_base_command, *params]
        return [*self.base_command, *params]

    def _start(
        self,
        params: Sequence[str] | None = None,
        coverage: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        params = list(params or [])
        environment = self._get_env(env)
        self._note_ports(params, environment)
        self.log_lines = []
        self.q = queue.Queue()
        self.proc = subprocess.Popen(
            self._command(params, coverage),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            start_new_session=True,  # a stop ends what the process started too
        )
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read_lines, args=(stream,), daemon=True).start()
        self._wait_until_serving()

    def _note_ports(self, params: Sequence[str], environment: Mapping[str, str]) -> None:
        port = option_value(params, "--port") or environment.get("HURRICANE_PORT") or "8000"
        self.port = int(port)
        probe_port = option_value(params, "--probe-port") or environment.get("HURRICANE_PROBE_PORT")
        self.probe_port = int(probe_port) if probe_port else self.port + 1

    def _read_lines(self, stream: object) -> None:
        for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
            self.q.put(line.decode("utf-8", "replace"))
        stream.close()  # type: ignore[attr-defined]

    def _collect(self, quiet: float) -> None:
        """Move what the process wrote into log_lines, until it is quiet for ``quiet``."""
        while True:
            try:
                self.log_lines.append(self.q.get(timeout=quiet))
            except queue.Empty:
                return

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            self._collect(0.05)
            if self.test_string and self.test_string in "".join(self.log_lines):
                return
            if self.proc is None or self.proc.poll() is not None:
                self._collect(0.2)  # the last lines of a process that exited
                return

    def _stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _ServerDriver(HurricaneBaseDriver):
    """A driver of a server: ``start_server`` and ``stop_server``."""

    def start_server(
        self,
        params: Sequence[str] | None = None,
        coverage: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._start(params, coverage, env)

    def stop_server(self) -> None:
        self._stop()


class HurricaneServerDriver(_ServerDriver):
    """``manage.py serve`` in the current directory."""

    coverage_base_command = (
        sys.executable,
        "-m",
        "coverage",
        "run",
        "--source=hurricane/",
        MANAGE_FILE,
        "serve",
    )
    base_command = (sys.executable, MANAGE_FILE, "serve")
    #: Written once the app port serves (see hurricane.serve.server).
    test_string = "Serving on port"


class HurricaneWebhookServerDriver(_ServerDriver):
    """A receiver of webhooks on port 8074 (hurricane.testing.start_webhook_receiver),
    which writes the status of each webhook it receives to its output."""

    ports = (8074,)
    coverage_base_command = (
        sys.executable,
        "-m",
        "coverage",
        "run",
        "--source=hurricane",
        "-m",
        "hurricane.testing.start_webhook_receiver",
    )
    base_command = (sys.executable, "-m", "hurricane.testing.start_webhook_receiver")
    test_string = "Started webhook receiver server"


class HurricaneAMQPDriver(HurricaneBaseDriver):
    """``manage.py consume``, and the RabbitMQ it consumes from: a container started
    through Docker where a Docker daemon answers (as django-hurricane 1.6 did), else
    the broker at ``AMQP_HOST``:``AMQP_PORT`` (127.0.0.1:5672 unless set)."""

    coverage_base_command = (
        sys.executable,
        "-m",
        "coverage",
        "run",
        "--source=hurricane/",
        MANAGE_FILE,
        "consume",
    )
    base_command = (sys.executable, MANAGE_FILE, "consume")
    #: Written once the consumer consumes (see hurricane.amqp.engine).
    test_string = "Consuming "
    rabbitmq_image = "rabbitmq:3-alpine"

    def __init__(self) -> None:
        super().__init__()
        self.container = None
        self._amqp: tuple[str, int] | None = None

    def start_amqp(self) -> None:
        container = self._start_container()
        if container is not None:
            self.container = container
            return
        host = os.environ.get("AMQP_HOST", "127.0.0.1")
        port = int(os.environ.get("AMQP_PORT", "5672"))
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as error:
            raise RuntimeError(
                f"no Docker daemon to start RabbitMQ in, and no broker answers at "
                f"{host}:{port} (AMQP_HOST, AMQP_PORT): {error}"
            ) from None
        self._amqp = (host, port)

    def _start_container(self):  # -> docker Container or None
        try:
            import docker

            client = docker.from_env()
            client.ping()
        except Exception:  # no docker-py, or no daemon: use a broker that runs
            return None
        container = client.containers.run(
            self.rabbitmq_image,
            auto_remove=True,
            detach=True,
            ports={"5672": ("127.0.0.1", None)},
        )
        container = client.containers.get(container.id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b"Server startup complete" in container.logs():
                break
            time.sleep(0.5)
        container.reload()
        return container

    def get_amqp_host_port(self) -> tuple[str, int] | tuple[None, None]:
        if self.container is not None:
            port = self.container.attrs["NetworkSettings"]["Ports"]["5672/tcp"][0]["HostPort"]
            return "127.0.0.1", int(port)
        if self._amqp is not None:
            return self._amqp
        return None, None

    def get_test_publisher(self, vhost: str = "/") -> TestPublisher:
        host, port = self.get_amqp_host_port()
        if host is None or port is None:
            raise RuntimeError("no broker to publish to: start_amqp() first")
        return TestPublisher(host, port, vhost)

    def start_consumer(
        self,
        params: Sequence[str] | None = None,
        coverage: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._start(params, coverage, env)

    def stop_consumer(self) -> None:
        self._stop()

    def halt_amqp(self) -> None:
        """Stop the broker's container, as a broker outage."""
        if self.container is None:
            raise RuntimeError("halt_amqp needs the broker in a Docker container")
        with contextlib.suppress(Exception):
            self.container.kill()

    def stop_amqp(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.kill()
            self.container = None
        self._amqp = None
