"""What a project coming from django-hurricane 1.6 relies on: the start-up lines its
scripts wait for, the harness its test suite runs on (``hurricane.testing``), its
module paths and the debugger warnings that let serving go on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from conftest import TEST_PROJECT, base_env, free_port, wait_until
from hurricane.testing import HurricanServerTest


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


def test_a_database_check_the_project_put_in_place_of_1_6s_holds_the_start(serve, tmp_path):
    flag = tmp_path / "database-check-fails"
    flag.touch()
    server = serve("--check-migrations", env={"TEST_DATABASE_CHECK_FLAG": str(flag)}, wait=False)
    wait_until(
        lambda: (
            "Database command execution has failed with the project's own database check"
            in server.output
        ),
        30,
        "the project's check to hold the start",
        server,
    )
    assert requests.get(server.probe("/startup"), timeout=10).status_code == 400
    flag.unlink()
    server.wait_started()
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_an_empty_media_root_keeps_1_6s_line_and_publishes_nothing(serve):
    """1.6 served the working directory under /media/ when MEDIA_ROOT was empty
    (Django's default): the project's own code. Hurricane serves nothing there, and
    says so in the words 1.6's scripts wait for."""
    server = serve("--media", env={"TEST_MEDIA_ROOT": ""})
    assert "Serving media files under /media/ is off: MEDIA_ROOT is not set" in server.output
    for leaked in ("/media/manage.py", "/media/testproject/settings.py"):
        assert requests.get(server.url(leaked), timeout=10).status_code == 404
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_an_empty_static_root_keeps_1_6s_line_and_publishes_nothing(serve):
    """The same for --static and an empty STATIC_ROOT (DEBUG off: no finders)."""
    server = serve("--static", env={"TEST_STATIC_ROOT": ""})
    assert "Serving static files under /static/ is off: STATIC_ROOT is not set" in server.output
    assert requests.get(server.url("/static/manage.py"), timeout=10).status_code == 404
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_a_failed_start_ends_with_1_6s_last_line_after_the_webhook(tmp_path):
    """A failing --command: the failure webhook is tried first (its receiver named in
    1.6's words: the URL is shown whole when it holds nothing but public words), then
    1.6's last line, exit 1."""
    down = f"http://localhost:{free_port()}/webhook"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(free_port()), "--command",
         "nosuchcommand", "--webhook-url", down],
        cwd=TEST_PROJECT, env=base_env(tmp_path), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1
    lines_in_order(
        result.stdout + result.stderr,
        "Start-up failed: management command 'nosuchcommand' failed",
        f"Sending webhook to {down} has failed due to ConnectionError (startup webhook",
        "Loop will be closed; exiting with status 1",
    )


def test_a_webhook_that_fails_is_said_at_once_in_1_6s_words_then_retried(serve):
    """1.6 tried once and logged the failure at once; Hurricane tries three times and
    says each failure as it happens, the whole URL where it holds only public words."""
    down = f"http://localhost:{free_port()}/webhook"  # nothing listens there
    server = serve("--webhook-url", down)
    failed = f"Sending webhook to {down} has failed due to ConnectionError (startup webhook, "
    wait_until(lambda: f"{failed}3 attempts)" in server.output, what="the webhook to give up")
    lines_in_order(
        server.output,
        f"INFO hurricane.webhooks {failed}attempt 1 of 3); trying again in 0.5 s",
        f"INFO hurricane.webhooks {failed}attempt 2 of 3); trying again in 1.0 s",
        f"WARNING hurricane.webhooks {failed}3 attempts)",
    )


def test_the_modules_of_1_6_import():
    code = (
        # The loggers' names as the standard library's (structlog's: the next test).
        "import sys; sys.modules['structlog'] = None; "
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


@pytest.mark.parametrize("installed", [True, False], ids=["structlog", "no-structlog"])
def test_the_loggers_of_1_6_are_structlog_s_where_it_is_installed(installed):
    """hurricane.server.loggers: structlog loggers that take key-value pairs where
    structlog is installed, the standard library's by the same names where not."""
    code = (
        ("" if installed else "sys.modules['structlog'] = None; ")
        + "logging.basicConfig(stream=sys.stdout, level=20, format='%(name)s %(message)s'); "
        "from hurricane.server.loggers import STRUCTLOG_ENABLED, logger; "
        "print('enabled', STRUCTLOG_ENABLED, type(logger).__module__.split('.')[0]); "
        "logger.info('hello from 1.6', **({'pod': 'p1'} if STRUCTLOG_ENABLED else {}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import logging, sys; " + code],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if installed:
        assert "enabled True structlog" in result.stdout, result.stdout
        line = next(line for line in result.stdout.splitlines() if "hello from 1.6" in line)
        assert "pod=p1" in line, result.stdout
    else:
        assert "enabled False logging" in result.stdout, result.stdout
        assert "hurricane.server.general hello from 1.6" in result.stdout, result.stdout


def test_setup_debugging_refuses_the_autoreloader_as_1_6_did():
    from hurricane.server.debugging import setup_debugging
    from hurricane.server.exceptions import IncompatibleOptions

    with pytest.raises(IncompatibleOptions):
        setup_debugging({"autoreload": True, "debugger": True, "pycharm_host": None})


def test_server_test_case_is_a_django_test_case():
    from django.test import SimpleTestCase

    assert issubclass(HurricanServerTest, SimpleTestCase)
