"""Dependencies that go away: the database, the webhook receiver, the workers.

A dependency outage must make the pod unready (so Kubernetes routes around it), never
dead (a restart does not bring a database back), must not hang requests nor probes,
and must heal by itself when the dependency returns.

The database here is a private PostgreSQL cluster the test stops and starts
(tests/support/postgres_cluster.py), never the shared server on 5432.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.postgres_cluster import PostgresCluster
from support.tcp_proxy import TcpProxy

from conftest import free_port, wait_until
from hurricane.platform.probes import CHECK_TIMEOUT

# Generous bounds: they catch a hang, not a slow machine.
PROMPT = 5.0  # an app request while the database is away
PROBE_BOUND = 0.5  # every single probe answer
PROBE_MEDIAN = 0.1  # the typical probe answer


def timed_get(url: str, timeout: float = 30.0) -> tuple[requests.Response, float]:
    began = time.monotonic()
    response = requests.get(url, timeout=timeout)
    return response, time.monotonic() - began


def alive_seconds(server, count: int = 20, also: str | None = None) -> list[float]:
    """How long each of ``count`` ``/alive`` probes took, each asserted 200; with
    ``also``, a URL asked after each probe must answer 200 too."""
    seconds = []
    for _ in range(count):
        response, took = timed_get(server.probe("/alive"))
        assert response.status_code == 200
        seconds.append(took)
        if also is not None:
            assert requests.get(also, timeout=10).status_code == 200
    return seconds


class HangingListener:
    """A TCP server that accepts connections and never says a word: a database or a
    webhook receiver that hangs. It holds every connection until ``close()``."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self.listener.accept()
                self.held.append(connection)

    def stop_listening(self) -> None:
        """Free the port for a real server; the connections accepted so far stay hung."""
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()

    def close(self) -> None:
        self.stop_listening()
        for connection in self.held:
            connection.close()


@contextlib.contextmanager
def hanging_listener(port: int = 0) -> Iterator[HangingListener]:
    listener = HangingListener(port)
    try:
        yield listener
    finally:
        listener.close()


class ProbeWatcher:
    """Polls a probe on a thread for as long as the test runs and records every answer:
    the test can then say "200 throughout", not just "200 when I looked"."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self.answers: list[tuple[int | str, float]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopping.is_set():
            try:
                response, seconds = timed_get(self.url, timeout=10)
                self.answers.append((response.status_code, seconds))
            except requests.RequestException as error:
                self.answers.append((error.__class__.__name__, 0.0))
            self.stopping.wait(self.interval)

    def stop(self) -> list[tuple[int | str, float]]:
        self.stopping.set()
        self.thread.join(15)
        return self.answers


def database_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "TEST_POSTGRES_DB": "postgres",
        "TEST_POSTGRES_HOST": "127.0.0.1",
        "TEST_POSTGRES_PORT": str(port),
        "TEST_POSTGRES_USER": "postgres",
        **extra,
    }


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster() as running:
        yield running


def assert_database_away(server, mode: str) -> None:
    """What a user sees while the database is away: not ready at once, alive, database
    requests fail fast with 5xx, other requests unaffected."""
    response, seconds = timed_get(server.probe("/ready"))
    assert response.status_code != 200, f"{mode}: the first /ready after the outage passed"
    assert "database 'default' does not answer" in response.text, response.text
    assert seconds < CHECK_TIMEOUT + 1, f"{mode}: /ready took {seconds:.1f} s"
    for _ in range(3):
        response, seconds = timed_get(server.url("/db/"))
        assert 500 <= response.status_code < 600, (mode, response.status_code)
        assert seconds < PROMPT, f"{mode}: a database request took {seconds:.1f} s"
    response = requests.get(server.url("/hello/"), timeout=10)
    assert response.status_code == 200, (mode, response.status_code)
    assert requests.get(server.probe("/alive"), timeout=10).status_code == 200


def assert_recovered(server) -> None:
    """Without a restart: ready again and database requests answer again."""
    wait_until(
        lambda: requests.get(server.probe("/ready"), timeout=10).status_code == 200,
        timeout=20,
        what="/ready to pass again once the database is back",
        server=server,
    )
    response = requests.get(server.url("/db/"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["now"]


def test_database_outage_fails_readiness_not_liveness_and_heals(serve, cluster):
    server = serve(env=database_env(cluster.port), migrate=False)
    assert_recovered(server)
    pid = server.process.pid
    alive = ProbeWatcher(server.probe("/alive"))

    # A clean shutdown, then a crash.
    for mode in ("fast", "immediate"):
        cluster.stop(mode=mode)
        assert_database_away(server, mode)
        cluster.start()
        assert_recovered(server)

    # A database host that accepts connections and never answers: the project's
    # connect_timeout (2 s, see the test project's settings) bounds the requests, the
    # readiness check's own bound (or CHECK_TIMEOUT) bounds the probe.
    cluster.stop()
    with hanging_listener(cluster.port):
        assert_database_away(server, "hanging")
    cluster.start()
    assert_recovered(server)

    answers = alive.stop()
    assert len(answers) > 10, answers
    assert {code for code, _ in answers} == {200}, f"/alive did not stay 200: {answers}"
    assert server.process.poll() is None and server.process.pid == pid
    assert "Readiness: failing: database 'default' does not answer" in server.output
    assert "Readiness: passing" in server.output


def test_hung_database_without_connect_timeout_cannot_wedge_readiness(serve, tmp_path: Path):
    """The project sets no connect_timeout (libpq then waits forever). The readiness
    check still answers within its timeout, and its connection attempt gives up by
    itself, so the check sees the database when it comes back even though the hung
    connection is never closed."""
    port = free_port()
    with hanging_listener(port) as hung:
        server = serve(env=database_env(port, TEST_POSTGRES_CONNECT_TIMEOUT=""), migrate=False)
        for _ in range(2):
            response, seconds = timed_get(server.probe("/ready"))
            assert response.status_code != 200, response.text
            assert seconds < CHECK_TIMEOUT + 1, f"/ready took {seconds:.1f} s"
        response, seconds = timed_get(server.probe("/alive"))
        assert response.status_code == 200
        assert seconds < PROBE_BOUND, f"/alive took {seconds:.2f} s"
        assert hung.held, "the readiness check never tried the hanging database"

        # The database returns on the same port; the hung connections stay open.
        hung.stop_listening()
        with PostgresCluster(port=port):
            assert_recovered(server)


@pytest.fixture
def kept_connection(serve) -> Iterator[tuple]:
    """The test project on PostgreSQL (the shared server, which stays up) through a
    TcpProxy that can fail the network, with CONN_MAX_AGE so that the readiness
    check keeps its connection; ready. Yields the server and the proxy."""
    proxy = TcpProxy(5432)
    try:
        server = serve(
            env=database_env(proxy.port, TEST_POSTGRES_CONN_MAX_AGE="600"), migrate=False
        )
        assert_recovered(server)
        yield server, proxy
    finally:
        proxy.close()


def test_a_kept_connection_that_hangs_mid_query_fails_readiness_not_liveness(kept_connection):
    """With CONN_MAX_AGE the readiness check keeps its connection. Frozen mid-way (a
    partition, a pooler with no server to give), its SELECT 1 waits on TCP, for
    minutes: /ready fails within CHECK_TIMEOUT, /alive stays 200 and fast (on the
    check thread they once shared, it waited behind that check and failed: a restart
    for a database outage), and all is well again when the connection moves again."""
    server, proxy = kept_connection
    alive = ProbeWatcher(server.probe("/alive"))
    proxy.freeze()
    response, seconds = timed_get(server.probe("/ready"))
    assert response.status_code != 200
    assert seconds < CHECK_TIMEOUT + 1, f"/ready took {seconds:.1f} s"
    assert "readiness checks did not answer" in response.text, response.text
    time.sleep(CHECK_TIMEOUT + 2)  # past the point where /alive failed
    assert requests.get(server.probe("/ready"), timeout=10).status_code != 200
    answers = alive.stop()
    proxy.resume()
    assert_recovered(server)
    assert len(answers) > 20, answers
    assert {code for code, _ in answers} == {200}, f"/alive did not stay 200: {answers}"
    assert max(took for _, took in answers) < PROBE_BOUND, answers


def install_iptables() -> None:
    """A fresh machine of this kind has no iptables: install it from Debian's
    packages, as the image test does podman (root is needed either way)."""
    if shutil.which("iptables"):
        return
    quiet = {
        "check": True,
        "capture_output": True,
        "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    }
    subprocess.run(["apt-get", "update", "-q"], **quiet)
    subprocess.run(["apt-get", "install", "-y", "-q", "iptables"], **quiet)


@contextlib.contextmanager
def packets_dropped(port: int) -> Iterator[None]:
    """A network partition in front of ``port``: every packet to it vanishes (no
    reset, no acknowledgement), as when a route or a node goes away."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
    install_iptables()
    subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True, capture_output=True)


def test_readiness_sees_the_database_again_as_soon_as_a_partition_ends(kept_connection):
    """A partition swallows the readiness check's kept connection mid-query. TCP
    would retry that query ever more rarely (exponential backoff) and
    /ready would stay failing long after the network is back; the check's own
    connection gives up after SILENCE_TIMEOUT_MS, connects afresh, and /ready passes
    within seconds of the partition's end. /alive stays 200 all along."""
    server, proxy = kept_connection
    alive = ProbeWatcher(server.probe("/alive"))
    with packets_dropped(proxy.port):
        deadline = time.monotonic() + 28
        response, seconds = timed_get(server.probe("/ready"))
        assert response.status_code != 200 and seconds < CHECK_TIMEOUT + 1
        while time.monotonic() < deadline:
            assert requests.get(server.probe("/ready"), timeout=10).status_code != 200
            time.sleep(1)
    ended = time.monotonic()
    wait_until(
        lambda: requests.get(server.probe("/ready"), timeout=10).status_code == 200,
        8,
        "/ready to pass within seconds of the partition's end",
        server,
    )
    assert time.monotonic() - ended < 8
    answers = alive.stop()
    assert {code for code, _ in answers} == {200}, f"/alive did not stay 200: {answers}"


def test_the_bounds_keep_what_the_project_set():
    from types import SimpleNamespace

    from hurricane.django.databases import SILENCE_OPTIONS, bound_connection_waits

    mine = {"connect_timeout": 1, "tcp_user_timeout": 20000, "sslmode": "require"}
    connection = SimpleNamespace(vendor="postgresql", settings_dict={"OPTIONS": mine})
    bound_connection_waits(connection)
    assert connection.settings_dict["OPTIONS"] == {**SILENCE_OPTIONS, **mine}
    assert mine == {"connect_timeout": 1, "tcp_user_timeout": 20000, "sslmode": "require"}
    forever = SimpleNamespace(vendor="postgresql", settings_dict={"OPTIONS": {}})
    bound_connection_waits(forever)
    assert forever.settings_dict["OPTIONS"] == {**SILENCE_OPTIONS, "connect_timeout": 3}
    sqlite = SimpleNamespace(vendor="sqlite", settings_dict={"OPTIONS": {}})
    bound_connection_waits(sqlite)
    assert sqlite.settings_dict["OPTIONS"] == {}


def test_an_older_libpq_gets_no_tcp_user_timeout(monkeypatch):
    """libpq before 12 refuses the option, and with it every connection."""
    from types import SimpleNamespace

    from hurricane.django import databases

    monkeypatch.setattr(databases, "libpq_version", lambda: 110000)
    connection = SimpleNamespace(vendor="postgresql", settings_dict={"OPTIONS": {}})
    databases.bound_connection_waits(connection)
    options = connection.settings_dict["OPTIONS"]
    assert "tcp_user_timeout" not in options
    assert options["keepalives"] == 1 and options["connect_timeout"] == 3


def test_webhook_receiver_down_or_hanging_leaves_serving_and_probes_alone(serve):
    refused_port = free_port()  # nothing listens here: connection refused
    with hanging_listener() as hanging:
        refused = serve(
            "--webhook-url", f"http://127.0.0.1:{refused_port}/hook", migrate=False, wait=False
        )
        hung = serve(
            "--webhook-url", f"http://127.0.0.1:{hanging.port}/hook", migrate=False, wait=False
        )
        refused.wait_started()
        hung.wait_started()

        # The startup webhook is stuck on the hanging receiver while we measure.
        wait_until(lambda: hanging.held, what="the webhook to reach the hanging receiver")
        while_hanging = alive_seconds(hung, also=hung.url("/hello/"))
        assert "Sending webhook" not in hung.output, "the hanging webhook was not in flight"

        # The refused webhook gives up after its retries, with one clear line.
        failure = (
            f"Sending webhook to http://127.0.0.1:{refused_port}/hook has failed"
            " due to ConnectionError (startup webhook, 3 attempts)"
        )
        refused.wait_for(lambda: failure in refused.output, what="the webhook failure log")
        baseline = alive_seconds(refused)
        assert requests.get(refused.url("/hello/"), timeout=10).status_code == 200

        assert max(while_hanging) < PROBE_BOUND, while_hanging
        assert statistics.median(while_hanging) < 5 * statistics.median(baseline) + 0.02, (
            while_hanging,
            baseline,
        )

        # The receiver finally drops the connection: that failure is logged too.
        hanging.close()
        hung_failure = (
            f"Sending webhook to http://127.0.0.1:{hanging.port}/hook has failed"
            " due to ConnectionError (startup webhook, 3 attempts)"
        )
        hung.wait_for(lambda: hung_failure in hung.output, what="the hung webhook's failure")

    for server in (refused, hung):
        assert server.output.count("(startup webhook, 3 attempts)") == 1, server.output
        assert "Traceback" not in server.output, server.output


def test_exhausted_worker_pool_keeps_probes_fast_and_drains(serve, tmp_path: Path):
    server = serve("--workers", "2", "--max-workers", "2", "--req-queue-len", "2", migrate=False)
    assert requests.get(server.probe("/ready"), timeout=10).status_code == 200
    gate = tmp_path / "open-the-gate"
    slow_url = server.url(f"/gate/?file={gate}")
    calls = 8  # 2 on the workers, 6 waiting: three times the queue length

    with ThreadPoolExecutor(calls) as clients:
        answers = [clients.submit(requests.get, slow_url, timeout=60) for _ in range(calls)]
        try:
            wait_until(
                lambda: requests.get(server.probe("/ready"), timeout=10).status_code != 200,
                timeout=10,
                what="/ready to fail while the backlog exceeds the queue length",
                server=server,
            )
            ready = requests.get(server.probe("/ready"), timeout=10)
            assert ready.status_code == 400
            assert "requests wait for a worker (limit 2)" in ready.text, ready.text

            probe_seconds = []
            for _ in range(15):
                for path in ("/alive", "/ready"):
                    response, seconds = timed_get(server.probe(path))
                    expected = 200 if path == "/alive" else 400
                    assert response.status_code == expected, (path, response.text)
                    probe_seconds.append(seconds)
            assert all(not answer.done() for answer in answers), "the slow calls ended early"
        finally:
            gate.touch()  # the slow calls end
        statuses = [answer.result().status_code for answer in answers]

    assert max(probe_seconds) < PROBE_BOUND, probe_seconds
    assert statistics.median(probe_seconds) < PROBE_MEDIAN, probe_seconds
    assert statuses == [200] * calls, statuses
    wait_until(
        lambda: requests.get(server.probe("/ready"), timeout=10).status_code == 200,
        timeout=10,
        what="/ready to pass once the backlog drained",
        server=server,
    )


def test_migration_check_against_a_hung_database_keeps_looking_and_stops_on_sigterm(serve):
    """The project sets no connect_timeout: libpq alone would wait forever on the first
    connect, with no line saying why the pod does not start, and SIGTERM would wait
    for it too."""
    port = free_port()
    with hanging_listener(port) as hung:
        server = serve(
            "--check-migrations",
            "--graceful-timeout", "5",
            env=database_env(port, TEST_POSTGRES_CONNECT_TIMEOUT=""),
            migrate=False,
            wait=False,
        )  # fmt: skip
        waiting = "Waiting for migrations: Database command execution has failed with"
        server.wait_for(
            lambda: waiting in server.output,
            timeout=20,
            what="the migration check to say what it waits for",
        )
        assert hung.held
        assert requests.get(server.probe("/startup"), timeout=5).status_code == 400
        began = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0, server.output
        assert time.monotonic() - began < 8, server.output
    assert "Stopped during start-up" in server.output
