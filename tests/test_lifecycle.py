"""The server's lifecycle, observed from outside: start-up tasks, the migration check
(SQLite and the real PostgreSQL on 127.0.0.1:5432), graceful shutdown, --max-lifetime
and the in-place restart past --max-memory. Real processes, real HTTP."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import requests

from conftest import POSTGRES_ADMIN, TEST_PROJECT, base_env, free_port, port_open, postgres_database

# -- helpers ---------------------------------------------------------------------------------


def poll_until(condition: Callable[[], bool], timeout: float, what: str, server=None) -> None:
    """Poll ``condition`` until it holds; connection errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, OSError):
            if condition():
                return
        time.sleep(0.05)
    log = f"\n--- serve output ---\n{server.output}" if server is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")


def status(url: str, timeout: float = 5.0) -> int:
    return requests.get(url, timeout=timeout).status_code


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run_migrate(tmp_path: Path, env: dict[str, str] | None = None) -> None:
    """``manage.py migrate`` with the environment the ``serve`` fixture gives the server."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=TEST_PROJECT,
        env=base_env(tmp_path, **(env or {})),
        check=True,
        timeout=120,
    )


class BackgroundRequest:
    """A GET sent on a thread of its own; ``result()`` gives its status and body."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.response: requests.Response | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(url, timeout), daemon=True)
        self.thread.start()

    def _run(self, url: str, timeout: float) -> None:
        try:
            self.response = requests.get(url, timeout=timeout)
        except BaseException as error:  # recorded for the test to report
            self.error = error

    def result(self, timeout: float = 60.0) -> tuple[int, str]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request did not finish"
        assert self.error is None, f"the request failed: {self.error!r}"
        return self.response.status_code, self.response.text


# -- 1. start-up tasks -----------------------------------------------------------------------


def test_commands_run_in_order_with_their_own_arguments(serve, tmp_path):
    record = tmp_path / "record.txt"
    server = serve(
        "--command",
        f"record {record} first",
        "--command",
        f"record {record} second with words",
        "--command",
        f"record {record} third",
    )
    assert lines(record) == ["first", "second with words", "third"]
    assert status(server.url("/hello/")) == 200
    output = server.output
    assert output.index(f"record {record} first") < output.index(f"record {record} third")


def test_commands_from_environment_one_per_line(serve, tmp_path):
    record = tmp_path / "record.txt"
    commands = f"record {record} env-one\nrecord {record} env two words\n"
    server = serve(env={"HURRICANE_COMMANDS": commands})
    assert lines(record) == ["env-one", "env two words"]
    assert status(server.url("/hello/")) == 200


def test_commands_from_setting_take_precedence_over_environment(serve, tmp_path):
    from_setting = tmp_path / "setting.txt"
    from_env = tmp_path / "env.txt"
    settings = {
        "HURRICANE_COMMANDS": [f"record {from_setting} s-one", f"record {from_setting} s two"]
    }
    server = serve(
        env={
            "TEST_SETTINGS": json.dumps(settings),
            "HURRICANE_COMMANDS": f"record {from_env} ignored",
        }
    )
    assert lines(from_setting) == ["s-one", "s two"]
    assert lines(from_env) == []
    assert status(server.url("/hello/")) == 200


def test_failing_command_stops_start_up_and_sends_failure_webhook(
    serve, tmp_path, webhook_receiver
):
    record = tmp_path / "record.txt"
    server = serve(
        "--webhook-url",
        webhook_receiver.url,
        "--command",
        f"record {record} ok",
        "--command",
        f"record {record} boom --fail",
        "--command",
        f"record {record} never",
        wait=False,
    )
    deadline = time.monotonic() + 60
    while server.process.poll() is None and time.monotonic() < deadline:
        assert not port_open(server.port), f"the app port opened:\n{server.output}"
        time.sleep(0.05)
    code = server.wait_exit(timeout=5)
    assert code != 0, server.output
    assert not port_open(server.port)
    assert lines(record) == ["ok", "boom"]
    output = server.output
    assert "record was asked to fail" in output, output
    hook = webhook_receiver.wait_for(lambda item: item.get("type") == "startup", timeout=10)
    assert hook["status"] == "failed", hook
    assert "record was asked to fail" in hook["traceback"], hook
    assert "Traceback" in hook["traceback"], hook
    assert not [item for item in webhook_receiver.received if item.get("status") == "succeeded"]


def test_an_application_that_cannot_load_fails_the_start_up_with_its_cause(serve, webhook_receiver):
    """A WSGI_APPLICATION that does not import: exit 1, its traceback logged once and
    sent in the failure webhook (the failure once broke down in a TypeError of its own,
    and no webhook left)."""
    settings = json.dumps({"WSGI_APPLICATION": "testproject.missing.application"})
    server = serve(
        "--webhook-url", webhook_receiver.url, env={"TEST_SETTINGS": settings}, wait=False
    )
    assert server.wait_exit(30) == 1, server.output
    output = server.output
    assert "ERROR hurricane.server.general Loading the application failed" in output
    assert output.count("No module named 'testproject.missing'") == 1, output
    assert "TypeError" not in output, output
    hook = webhook_receiver.wait_for(lambda item: item.get("type") == "startup", timeout=10)
    assert hook["status"] == "failed", hook
    assert "No module named 'testproject.missing'" in hook["traceback"], hook


def test_successful_start_sends_startup_webhook(serve, webhook_receiver):
    server = serve("--webhook-url", webhook_receiver.url)
    hook = webhook_receiver.wait_for(lambda item: item.get("type") == "startup", timeout=20)
    assert hook["status"] == "succeeded", hook
    assert "traceback" not in hook
    assert status(server.url("/hello/")) == 200


# -- 2. the migration check ------------------------------------------------------------------


def assert_waits_for_migrations(server, log_text: str) -> None:
    """Start-up answers 400, the app port stays closed and the log says what it waits for."""
    poll_until(
        lambda: status(server.probe("/startup")) == 400,
        60,
        "the startup probe to answer 400",
        server,
    )
    poll_until(lambda: log_text in server.output, 60, f"the log line {log_text!r}", server)
    time.sleep(1.5)  # the server re-checks every second: it must still be waiting
    assert server.process.poll() is None, server.output
    assert status(server.probe("/startup")) == 400
    assert status(server.probe("/ready")) != 200
    assert not port_open(server.port), server.output


def test_check_migrations_waits_for_sqlite_migrations(serve, tmp_path):
    server = serve("--check-migrations", migrate=False, wait=False)
    assert_waits_for_migrations(server, "migrations pending on database 'default'")
    run_migrate(tmp_path)
    server.wait_started(timeout=60)
    assert requests.post(server.url("/items/"), timeout=10).json() == {"count": 1}
    assert status(server.url("/hello/")) == 200


def test_check_migrations_apply_applies_sqlite_migrations(serve):
    server = serve("--check-migrations-apply", migrate=False, wait=False)
    server.wait_started(timeout=60)
    assert requests.get(server.url("/items/"), timeout=10).json() == {"count": 0}
    assert requests.post(server.url("/items/"), timeout=10).json() == {"count": 1}
    assert requests.get(server.url("/items/"), timeout=10).json() == {"count": 1}


def test_check_migrations_waits_for_postgres_migrations(serve, tmp_path):
    with postgres_database() as database:
        env = {"TEST_POSTGRES_DB": database}
        server = serve("--check-migrations", env=env, migrate=False, wait=False)
        try:
            assert_waits_for_migrations(server, "migrations pending on database 'default'")
            run_migrate(tmp_path, env)
            server.wait_started(timeout=60)
            assert requests.post(server.url("/items/"), timeout=10).json() == {"count": 1}
            assert status(server.probe("/ready")) == 200
        finally:
            server.kill()


def test_check_migrations_apply_applies_postgres_migrations(serve):
    with postgres_database() as database:
        server = serve(
            "--check-migrations-apply",
            env={"TEST_POSTGRES_DB": database},
            migrate=False,
            wait=False,
        )
        try:
            server.wait_started(timeout=60)
            assert requests.post(server.url("/items/"), timeout=10).json() == {"count": 1}
            assert requests.get(server.url("/items/"), timeout=10).json() == {"count": 1}
        finally:
            server.kill()
        with psycopg.connect(
            f"host=127.0.0.1 port=5432 user=postgres dbname={database}", connect_timeout=10
        ) as conn:
            count = conn.execute("SELECT count(*) FROM testapp_item").fetchone()[0]
        assert count == 1


def test_check_migrations_keeps_waiting_for_unreachable_postgres(serve):
    # PostgreSQL itself must be there: this test is about a *second* one that is not.
    with psycopg.connect(POSTGRES_ADMIN, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    env = {"TEST_POSTGRES_DB": "hurricane_unreachable", "TEST_POSTGRES_PORT": str(free_port())}
    server = serve("--check-migrations", env=env, migrate=False, wait=False)
    assert_waits_for_migrations(server, "Database command execution has failed with")
    assert "Waiting for migrations" in server.output
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=20) == 0, server.output


# -- 3. shutdown -----------------------------------------------------------------------------


def test_sigterm_lets_in_flight_requests_finish(serve):
    server = serve()
    in_flight = [BackgroundRequest(server.url("/slow/?seconds=2")) for _ in range(4)]
    time.sleep(1.0)  # the requests have reached their view (each sleeps 2 s)
    server.signal(signal.SIGTERM)
    poll_until(
        lambda: status(server.probe("/ready")) == 503,
        5,
        "readiness to answer 503 after SIGTERM",
        server,
    )
    for request in in_flight:
        assert request.result() == (200, "slept 2.0")
    assert server.wait_exit(timeout=30) == 0, server.output


def test_shutdown_delay_keeps_serving_then_closes_listener(serve):
    server = serve("--shutdown-delay", "2")
    long_request = BackgroundRequest(server.url("/slow/?seconds=6"))
    time.sleep(1.0)
    server.signal(signal.SIGTERM)
    poll_until(
        lambda: status(server.probe("/ready")) == 503,
        5,
        "readiness to answer 503 after SIGTERM",
        server,
    )
    # Within the delay, new connections are still served.
    response = requests.get(server.url("/hello/"), timeout=5)
    assert response.status_code == 200
    assert response.text == "Hello from Hurricane"
    # After it the listener closes, while the in-flight request keeps the process up.
    poll_until(lambda: not port_open(server.port), 10, "the app port to close", server)
    assert server.process.poll() is None, server.output
    assert status(server.probe("/ready")) == 503
    assert status(server.probe("/alive")) == 200
    assert long_request.result() == (200, "slept 6.0")
    assert server.wait_exit(timeout=30) == 0, server.output


def test_second_sigterm_exits_at_once(serve):
    server = serve()
    long_request = BackgroundRequest(server.url("/slow/?seconds=10"))
    time.sleep(1.0)
    server.signal(signal.SIGTERM)
    poll_until(
        lambda: status(server.probe("/ready")) == 503,
        5,
        "readiness to answer 503 after SIGTERM",
        server,
    )
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    code = server.wait_exit(timeout=15)
    assert code != 0, server.output
    assert time.monotonic() - began < 6, "the second SIGTERM did not end the process at once"
    long_request.thread.join(15)
    assert long_request.response is None or long_request.response.status_code != 200


def test_graceful_timeout_bounds_the_wait(serve):
    server = serve("--graceful-timeout", "1")
    long_request = BackgroundRequest(server.url("/slow/?seconds=10"))
    time.sleep(1.0)
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    server.wait_exit(timeout=20)
    waited = time.monotonic() - began
    # The view still had ~9 s to run: the process must not have waited for it.
    assert waited < 6, f"exited {waited:.1f} s after SIGTERM:\n{server.output}"
    assert "still running" in server.output, server.output
    long_request.thread.join(15)
    assert long_request.response is None or long_request.response.status_code != 200


# -- 4. --max-lifetime -----------------------------------------------------------------------


def test_max_lifetime_makes_liveness_fail(serve):
    server = serve("--max-lifetime", "3")
    assert status(server.probe("/alive")) == 200
    for served in range(1, 5):
        assert status(server.url("/hello/")) == 200
        expected = 200 if served <= 3 else 400  # more than 3, as django-hurricane 1.6
        assert status(server.probe("/alive")) == expected, served
    assert status(server.probe("/alive")) == 400
    # Liveness only: the app still answers, and probes do not count as app requests.
    assert status(server.url("/hello/")) == 200


# -- 5. --max-memory -------------------------------------------------------------------------


def test_max_memory_restarts_in_place_without_dropping_requests(serve):
    server = serve("--max-memory", "200")
    pid = server.process.pid
    results: list[int | str] = []
    assert requests.get(server.url("/hold/?mb=250"), timeout=20).status_code == 200
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        try:
            results.append(requests.get(server.url("/hello/"), timeout=20).status_code)
        except requests.RequestException as error:
            results.append(f"{error.__class__.__name__}: {error}")
        time.sleep(0.02)
    failures = [result for result in results if result != 200]
    assert not failures, (
        f"{len(failures)} of {len(results)} failed: {failures[:3]}\n{server.output}"
    )
    output = server.output
    assert "over --max-memory 200 MB: restarting in place" in output, output
    assert "after an in-place restart" in output, output
    # The fresh process holds nothing: one restart, not one every few seconds.
    assert output.count("restarting in place") == 1, output
    # The fresh image chose its core among all again (one inherited core would leave
    # it nothing to choose, and no way off a crowded core).
    restarts = re.findall(r"Serving on port .*after an in-place restart", output)
    assert all(re.search(r"; CPU \d+\): ", line) for line in restarts), restarts
    assert server.process.poll() is None and server.process.pid == pid
    poll_until(
        lambda: status(server.probe("/startup")) == 200,
        30,
        "the startup probe to answer 200 after the restart",
        server,
    )


def test_max_memory_below_a_fresh_process_says_so_once_and_does_not_loop(serve):
    server = serve("--max-memory", "5")
    pid = server.process.pid
    poll_until(lambda: "--max-memory 5 MB is below the" in server.output, 10, "the line", server)
    time.sleep(6)  # past the first memory check
    assert status(server.url("/hello/")) == 200
    output = server.output
    assert re.search(
        r"ERROR hurricane.server.general --max-memory 5 MB is below the \d+ MB this process "
        r"takes as soon as it serves: a restart could not bring it under",
        output,
    ), output
    assert "restarting in place" not in output, output
    assert server.process.pid == pid and output.count("Serving on port") == 1
