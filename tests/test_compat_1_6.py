"""What a project coming from django-hurricane 1.6 relies on: the start-up lines its
scripts wait for, the harness its test suite runs on (``hurricane.testing``), its
module paths and the debugger warnings that let serving go on."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import requests

from conftest import TEST_PROJECT, base_env, free_port, wait_until
from hurricane.testing import HurricaneServerDriver, HurricanServerTest
from hurricane.testing.actors import HTTPClient


def lines_in_order(output: str, *expected: str) -> None:
    """Each of ``expected`` is in ``output``, in this order."""
    at = 0
    for text in expected:
        found = output.find(text, at)
        assert found >= 0, f"{text!r} not after position {at} in:\n{output}"
        at = found + len(text)


def test_the_start_up_lines_of_1_6_come_first(serve, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    server = serve("--media", "--command", "check", "--check-migrations", "--max-memory", "900")
    lines_in_order(
        server.output,
        "Tornado-powered Django web server. Version: ",
        f"Starting probe application running on port {server.probe_port} with route "
        "liveness-probe: /alive, readiness-probe: /ready, startup-probe: /startup",
        f"Starting Prometheus metrics exporter on port {server.probe_port} with route /metrics",
        "Starting execution of management commands",
        "Database was checked successfully",
        "No pending migrations",
        f"Serving media files under /media/ from {media}",
        f"Starting HTTP Server on port {server.port}",
        f"Serving on port {server.port}",
        "Starting memory allocation check with maximum memory set to 900 Mb",
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--no-probe"], ["No probe application running", "because --no-probe flag was set"]),
        (["--no-metrics"], ["Running without Prometheus exporter, because --no-metrics flag"]),
        (
            ["--probe-port", "SAME"],
            ["running integrated on port PORT", "Prometheus metrics exporter on port PORT"],
        ),
    ],
)
def test_the_probe_lines_of_1_6_for_each_setup(serve, args, expected):
    port = free_port()
    args = [arg.replace("SAME", str(port)) for arg in args]
    server = serve("--port", str(port), *args, wait=False)
    wait_until(lambda: "Serving on port" in server.output, 30, "the server to serve", server)
    for text in expected:
        assert text.replace("PORT", str(port)) in server.output, server.output
    assert "Starting without memory allocation check" in server.output


def test_the_consumers_start_up_line_of_1_6(consume, broker):
    from conftest import consumer_args

    process = consume(*consumer_args(broker.names()))
    assert "Starting a Tornado-powered Django AMQP consumer" in process.output.splitlines()[0]
    assert f"Probe application running on port {process.probe_port}" in process.output


def test_the_debugger_line_of_1_6(serve):
    debugger_port = free_port()
    server = serve("--debugger", "--debugger-port", str(debugger_port))
    assert f"Listening for debug clients at port {debugger_port}" in server.output


def test_a_pycharm_server_that_does_not_answer_is_a_warning_and_serving_goes_on(serve):
    closed = free_port()  # nothing listens there
    server = serve("--pycharm-host", "127.0.0.1", "--pycharm-port", str(closed))
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert f"Could not connect to the PyCharm debug server at 127.0.0.1:{closed}" in server.output
    without_port = serve("--pycharm-host", "127.0.0.1")
    assert requests.get(without_port.url("/hello/"), timeout=10).status_code == 200
    assert (
        "No '--pycharm-port' was specified. The '--pycharm-host' option can only be used "
        "in combination with the '--pycharm-port' option."
    ) in without_port.output


def test_the_production_refusal_of_a_debugger_stays_hard(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(free_port()), "--forbid-debugger",
         "--pycharm-host", "127.0.0.1"],
        cwd=TEST_PROJECT, env=base_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "refusing to start" in result.stdout + result.stderr


def test_autoreload_and_static_watch_lines_of_1_6(serve, tmp_path):
    missing = tmp_path / "nowhere"
    server = serve("--autoreload", "--static-watch", str(missing), wait=False)
    wait_until(lambda: "Serving on port" in server.output, 30, "the server to serve", server)
    assert "Autoreload was performed" in server.output
    assert f"Tried to watch {missing}, but it does not exist." in server.output


# -- hurricane.testing: 1.6's harness, on our test project -------------------------------


def test_the_harness_starts_a_server_reads_its_output_and_stops_it(tmp_path, monkeypatch):
    monkeypatch.chdir(TEST_PROJECT)
    for key, value in base_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], check=True)
    port = free_port()

    class Driver(HurricaneServerDriver):
        ports = (port, port + 1)

    driver = Driver()
    driver.start_server(["--port", str(port)], coverage=False, env={"HURRICANE_MEDIA": "1"})
    try:
        # start_server returned once the server serves: no wait needed.
        assert driver.get_server_host_port() == ("localhost", port)
        assert driver.get_server_host_port(probe_port=True) == ("localhost", port + 1)
        response = HTTPClient("localhost", port).get("/hello/")
        assert (response.status, response.text) == (200, "Hello from Hurricane")
        assert HTTPClient("localhost", port + 1).post("/ready", None).status == 200
        output, _ = driver.get_output(read_all=True)
        assert "Tornado-powered Django web server" in output
        assert "Serving media files under /media/" in output  # the env reached it
        assert "200 GET /hello/" in output
    finally:
        driver.stop_server()
    assert driver.proc.returncode == 0
    with socket.socket() as sock:  # the stop waited: the port is free again
        sock.bind(("127.0.0.1", port))


def test_the_harness_takes_a_port_whose_server_just_stopped(tmp_path, monkeypatch):
    """A server that closed its connections first leaves them in TIME_WAIT on its
    port for a minute: the next test's driver must still find the port free."""
    monkeypatch.chdir(TEST_PROJECT)
    for key, value in base_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    port = free_port()

    class Driver(HurricaneServerDriver):
        ports = (port, port + 1)

    first = Driver()
    first.start_server(["--port", str(port)], coverage=False)
    session = requests.Session()  # a kept connection, which the draining server closes
    assert session.get(f"http://127.0.0.1:{port + 1}/alive", timeout=10).status_code == 200
    first.stop_server()
    second = Driver()
    second.start_server(["--port", str(port)], coverage=False)
    try:
        assert session.get(f"http://127.0.0.1:{port + 1}/alive", timeout=10).status_code == 200
    finally:
        second.stop_server()


def test_the_harness_refuses_a_taken_port():
    from hurricane.testing import BusyPortException

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()

        class Driver(HurricaneServerDriver):
            ports = (taken.getsockname()[1],)

        with pytest.raises(BusyPortException, match="already in use"):
            Driver()


def test_the_harness_test_case_runs_a_1_6_style_test(tmp_path):
    """A test module written for 1.6 (cycle_server with args and env, app_client,
    probe_client), run by Django's test runner against our test project."""
    port = free_port()
    module = tmp_path / "legacy_tests.py"
    module.write_text(
        "from hurricane.testing import HurricanServerTest\n"
        "from hurricane.testing.drivers import HurricaneServerDriver\n\n"
        "class Driver(HurricaneServerDriver):\n"
        f"    ports = ({port}, {port + 1})\n\n"
        "class LegacyTests(HurricanServerTest):\n"
        "    driver = Driver\n\n"
        f"    @HurricanServerTest.cycle_server(args=['--port', '{port}'], coverage=False,\n"
        "                                     env={'HURRICANE_MAX_LIFETIME': '5'})\n"
        "    def test_serves(self):\n"
        "        self.assertEqual(self.app_client.get('/hello/').status, 200)\n"
        "        self.assertEqual(self.probe_client.get('/alive').status, 200)\n"
        "        out, _ = self.driver.get_output(read_all=True)\n"
        "        self.assertIn('Starting HTTP Server on port', out)\n"
    )
    env = base_env(tmp_path, PYTHONPATH=f"{tmp_path}{os.pathsep}{base_env(tmp_path)['PYTHONPATH']}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=TEST_PROJECT, env=env,
                   check=True)  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "legacy_tests", "-v", "2"],
        cwd=TEST_PROJECT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"test_serves .* ok", result.stderr), result.stderr


def test_the_modules_of_1_6_import():
    code = (
        "import django; from django.conf import settings; settings.configure(); "
        "from hurricane.server import signal_handler, static_watch, check_databases; "
        "from hurricane.server.loggers import STRUCTLOG_ENABLED, logger, access_log; "
        "from hurricane.server.exceptions import IncompatibleOptions; "
        "from hurricane.server.debugging import setup_debugging, setup_debugpy, setup_pycharm; "
        "from hurricane.webhooks import webhook_registry; "
        "from hurricane.testing.testcases import HurricaneWebhookServerTest, HurricaneAMQPTest; "
        "from hurricane.testing.actors import WebhookReceiverServer, TestPublisher; "
        "print(json.dumps([logger.name, access_log.name]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["hurricane.server.general", "hurricane.server.access"]


def test_setup_debugging_refuses_the_autoreloader_as_1_6_did():
    from hurricane.server.debugging import setup_debugging
    from hurricane.server.exceptions import IncompatibleOptions

    with pytest.raises(IncompatibleOptions):
        setup_debugging({"autoreload": True, "debugger": True, "pycharm_host": None})


def test_server_test_case_is_a_django_test_case():
    from django.test import SimpleTestCase

    assert issubclass(HurricanServerTest, SimpleTestCase)
