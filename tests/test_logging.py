"""``--log-format`` and ``--log-level``: real ``serve`` and ``consume`` processes whose
output (stdout and stderr together) is read line by line, and the entrypoint's
summary line in JSON mode."""

from __future__ import annotations

import json
import re
import signal

import requests

from conftest import (
    DEMO_PROJECT,
    consumer_args,
    entrypoint_env,
    free_port,
    run_entrypoint,
    run_serve,
    wait_until,
)

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
STABLE_KEYS = {"timestamp", "level", "logger", "message"}


def json_lines(output: str) -> list[dict]:
    """Every line of the output as a JSON object; fails on the first line that is not."""
    records = []
    for number, line in enumerate(output.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}\n{output}") from None
        assert isinstance(record, dict), line
        assert STABLE_KEYS <= record.keys(), line
        assert TIMESTAMP.fullmatch(record["timestamp"]), line
        records.append(record)
    return records


def complete_json_lines(output: str) -> list[dict]:
    """The JSON lines written so far, skipping one still being written (for waiting)."""
    found = []
    for line in output.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            pass
    return found


def has_record(server, **fields) -> bool:
    return any(
        all(record.get(key) == value for key, value in fields.items())
        for record in complete_json_lines(server.output)
    )


def stop(server) -> str:
    """SIGTERM, wait for the exit, and return everything the process wrote."""
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.output
    return server.output


def test_json_lines_for_access_startup_and_a_view_that_raises(serve):
    server = serve("--log-format", "json", migrate=False)
    traced = {
        "X-Request-ID": "req-42",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    assert requests.get(server.url("/hello/?q=1"), headers=traced, timeout=10).status_code == 200
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert requests.get(server.url("/error/"), timeout=10).status_code == 500
    assert requests.get(server.url("/stream-error/"), timeout=10).status_code == 500
    wait_until(
        lambda: has_record(server, path="/stream-error/"), 10, "the last access line", server
    )
    records = json_lines(stop(server))

    assert any(
        r["logger"] == "hurricane.server" and r["message"].startswith("Serving on") for r in records
    )
    access = [r for r in records if r["logger"] == "hurricane.access"]
    assert [r["path"] for r in access] == ["/hello/?q=1", "/hello/", "/error/", "/stream-error/"]
    first, second, failed = access[0], access[1], access[2]
    assert first["level"] == "INFO"
    assert first["method"] == "GET"
    assert first["status"] == 200
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert first["remote_addr"] == "127.0.0.1"
    assert first["request_id"] == "req-42"
    assert first["traceparent"] == traced["traceparent"]
    assert "request_id" not in second and "traceparent" not in second
    assert failed["status"] == 500
    # The message stays the text line's.
    assert re.fullmatch(r"200 GET /hello/\?q=1 \(127\.0\.0\.1\) \d+\.\d\dms", first["message"])

    raised = [r for r in records if "this view always fails" in r.get("traceback", "")]
    assert len(raised) == 1, records
    assert raised[0]["logger"] == "django.request"
    assert raised[0]["level"] == "ERROR"
    assert raised[0]["traceback"].startswith("Traceback (most recent call last):")
    streamed = [r for r in records if "this stream always fails" in r.get("traceback", "")]
    assert [r["logger"] for r in streamed] == ["hurricane.server"]


def test_text_mode_shows_the_traceback_of_a_view_that_raises_once(serve):
    """Django alone would mail it to ADMINS and print nothing with DEBUG off."""
    server = serve(migrate=False)
    assert requests.get(server.url("/error/"), timeout=10).status_code == 500
    wait_until(lambda: "500 GET /error/" in server.output, 10, "the access line", server)
    output = stop(server)
    assert re.search(r" ERROR django\.request Internal Server Error: /error/\n", output), output
    assert output.count("RuntimeError: this view always fails") == 1, output
    assert output.count("Traceback (most recent call last):") == 1, output


def test_format_from_the_environment_and_level_from_a_setting_in_django_debug(serve):
    """With DEBUG, Django's own console handler would write its records a second time."""
    server = serve(
        migrate=False,
        env={
            "HURRICANE_LOG_FORMAT": "json",
            "TEST_SETTINGS": json.dumps({"HURRICANE_LOG_LEVEL": "debug"}),
            "TEST_DEBUG": "1",
        },
    )
    assert requests.get(server.url("/error/"), timeout=10).status_code == 500
    wait_until(lambda: has_record(server, path="/error/"), 10, "the access line", server)
    records = json_lines(stop(server))

    messages = {(r["level"], r["message"]) for r in records}
    assert ("DEBUG", "Option log_format = 'json' (from environment HURRICANE_LOG_FORMAT)") in (
        messages
    )
    assert ("DEBUG", "Option log_level = 'DEBUG' (from setting HURRICANE_LOG_LEVEL)") in messages
    raised = [r for r in records if "this view always fails" in r.get("traceback", "")]
    assert [r["logger"] for r in raised] == ["django.request"]


def test_level_warning_from_the_command_line_hides_info_lines(serve):
    server = serve(
        "--log-level",
        "WARNING",
        migrate=False,
        env={"TEST_SETTINGS": json.dumps({"HURRICANE_LOG_FORMAT": "json"})},
    )
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert requests.get(server.url("/stream-error/"), timeout=10).status_code == 500
    wait_until(
        lambda: has_record(server, message="Error producing the response body"),
        10,
        "the error line",
        server,
    )
    records = json_lines(stop(server))

    hurricane = [r for r in records if r["logger"].startswith("hurricane")]
    assert [r["message"] for r in hurricane] == ["Error producing the response body"]
    assert hurricane[0]["level"] == "ERROR"


def test_a_logging_setting_that_configures_hurricane_wins(serve):
    logging_setting = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mine": {"format": "MINE %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "mine": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "mine",
            }
        },
        "loggers": {"hurricane": {"handlers": ["mine"], "propagate": False}},
    }
    server = serve(
        migrate=False,
        env={
            "HURRICANE_LOG_FORMAT": "json",
            "HURRICANE_LOG_LEVEL": "debug",
            "TEST_SETTINGS": json.dumps({"LOGGING": logging_setting}),
        },
    )
    assert requests.get(server.url("/error/"), timeout=10).status_code == 500
    wait_until(lambda: "MINE INFO hurricane.access 500 GET /error/" in server.output, 10)
    lines = stop(server).splitlines()

    assert (
        "MINE DEBUG hurricane.server Option log_level = 'DEBUG' "
        "(from environment HURRICANE_LOG_LEVEL)"
    ) in lines
    assert any(line.startswith("MINE INFO hurricane.server Serving on") for line in lines)
    others = json_lines("\n".join(line for line in lines if not line.startswith("MINE ")))
    # What the setting leaves alone is still JSON: Django's error, not Hurricane's lines.
    assert [r["logger"] for r in others] == ["django.request"]
    assert "this view always fails" in others[0]["traceback"]


def test_bad_values_stop_serve_with_one_line_naming_the_source(tmp_path):
    levels = "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    cases = [
        (
            ["--log-format", "xml"],
            {},
            "'xml' for --log-format (from command line --log-format): expected text or json",
        ),
        (
            [],
            {"TEST_SETTINGS": json.dumps({"HURRICANE_LOG_FORMAT": "yaml"})},
            "'yaml' for --log-format (from setting HURRICANE_LOG_FORMAT): expected text or json",
        ),
        (
            [],
            {"HURRICANE_LOG_LEVEL": "verbose"},
            f"'verbose' for --log-level (from environment HURRICANE_LOG_LEVEL): {levels}",
        ),
    ]
    for args, env, expected in cases:
        _, result = run_serve(tmp_path, *args, **env)
        assert result.returncode != 0
        assert result.stdout == ""
        assert result.stderr.splitlines() == [f"CommandError: invalid value {expected}"]


def test_consume_in_json_writes_a_failing_handler_as_one_line(consume, broker):
    names = broker.names()
    process = consume(
        *consumer_args(
            names, "--dead-letter-exchange", names.dead_letter_exchange, "--log-format", "json"
        )
    )
    broker.publish(names.exchange, names.queue, [{"id": "bad", "raise": True}])
    wait_until(
        lambda: any(
            "handler failed on message bad" in r.get("traceback", "")
            for r in complete_json_lines(process.output)
        ),
        20,
        "the handler's traceback",
        process,
    )
    records = json_lines(stop(process))
    failed = [r for r in records if "handler failed on message bad" in r.get("traceback", "")]
    assert len(failed) == 1
    assert failed[0]["logger"].startswith("hurricane.amqp")


def test_the_entrypoint_summary_is_json_with_secrets_masked(tmp_path):
    env = entrypoint_env(tmp_path, HURRICANE_LOG_FORMAT="json", HURRICANE_WEBHOOK_SECRET="hunter2")
    result = run_entrypoint(["true", "--webhook-secret", "hunter3"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hunter" not in result.stderr
    [summary] = json_lines(result.stderr)
    assert summary["logger"] == "hurricane-entrypoint"
    assert summary["level"] == "INFO"
    assert summary["message"] == f"running true --webhook-secret ***** in {DEMO_PROJECT}"
    assert summary["environment"] == {
        "HURRICANE_APP_DIR": str(DEMO_PROJECT),
        "HURRICANE_LOG_FORMAT": "json",
        "HURRICANE_WEBHOOK_SECRET": "*****",
    }


def test_through_the_entrypoint_a_bad_level_stops_serve_after_the_json_summary(tmp_path):
    env = entrypoint_env(
        tmp_path,
        HURRICANE_PORT=str(free_port()),
        HURRICANE_LOG_FORMAT="json",
        HURRICANE_LOG_LEVEL="loud",
    )
    result = run_entrypoint(["serve"], env, tmp_path)
    assert result.returncode == 1
    summary, error = result.stderr.splitlines()
    assert json.loads(summary)["message"].startswith("running ")
    assert error == (
        "CommandError: invalid value 'loud' for --log-level (from environment "
        "HURRICANE_LOG_LEVEL): expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
