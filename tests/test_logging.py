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
    assert requests.get(server.url("/warn/"), timeout=10).status_code == 200
    wait_until(lambda: has_record(server, path="/warn/"), 10, "the last access line", server)
    records = json_lines(stop(server))

    assert any(
        r["logger"] == "hurricane.server.general" and r["message"].startswith("Serving on")
        for r in records
    )
    access = [r for r in records if r["logger"] == "hurricane.server.access"]
    assert [r["path"] for r in access] == [
        "/hello/?q=1",
        "/hello/",
        "/error/",
        "/stream-error/",
        "/warn/",
    ]
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
    assert [r["logger"] for r in streamed] == ["hurricane.server.general"]
    warned = [r for r in records if "this view always warns" in r["message"]]
    assert [(r["logger"], r["level"]) for r in warned] == [("py.warnings", "WARNING")], records


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
    # The 200's access line is below WARNING; the 500's is an error (as in 1.6).
    assert [(r["level"], r["message"].split(" (")[0]) for r in hurricane] == [
        ("ERROR", "Error producing the response body"),
        ("ERROR", "500 GET /stream-error/"),
    ]


def test_a_logging_setting_written_for_django_hurricane_1_6_keeps_working(serve):
    """1.6's logger names: a LOGGING that quietens hurricane.server.access (a common
    setting) drops the access lines, and hurricane.server.general gets the rest."""
    logging_setting = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"old": {"format": "OLD %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "old": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "old",
            }
        },
        "loggers": {
            "hurricane.server.general": {"handlers": ["old"], "propagate": False},
            "hurricane.server.access": {"level": "WARNING"},
        },
    }
    server = serve(migrate=False, env={"TEST_SETTINGS": json.dumps({"LOGGING": logging_setting})})
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert requests.get(server.url("/error/"), timeout=10).status_code == 500
    wait_until(lambda: "500 GET /error/" in server.output, 10, "the error's access line", server)
    output = stop(server)
    assert "OLD INFO hurricane.server.general Serving on port" in output
    assert "200 GET /hello/" not in output  # below WARNING


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
    wait_until(lambda: "MINE ERROR hurricane.server.access 500 GET /error/" in server.output, 10)
    lines = stop(server).splitlines()

    assert (
        "MINE DEBUG hurricane.server.general Option log_level = 'DEBUG' "
        "(from environment HURRICANE_LOG_LEVEL)"
    ) in lines
    assert any(line.startswith("MINE INFO hurricane.server.general Serving on") for line in lines)
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
    assert failed[0]["logger"].startswith("hurricane.amqp.general")


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
    summary, error = json_lines(result.stderr)
    assert summary["message"].startswith("running ")
    assert (error["level"], error["logger"]) == ("ERROR", "hurricane.server.general")
    assert error["message"] == (
        "invalid value 'loud' for --log-level (from environment "
        "HURRICANE_LOG_LEVEL): expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )


def test_through_the_entrypoint_its_own_refusal_is_json(tmp_path):
    env = entrypoint_env(tmp_path, HURRICANE_LOG_FORMAT="json")
    env["HURRICANE_APP_DIR"] = str(tmp_path / "nowhere")
    result = run_entrypoint(["serve"], env, tmp_path)
    assert result.returncode == 64
    [refusal] = json_lines(result.stderr)
    assert (refusal["level"], refusal["logger"]) == ("ERROR", "hurricane-entrypoint")
    assert refusal["message"].startswith(f"no folder {tmp_path / 'nowhere'}")


# -- what serve writes before it serves: system checks, start-up commands, failures --------

# A project whose STATICFILES_DIRS names a missing folder: Django's check staticfiles.W004.
CHECK_WARNING = {"TEST_SETTINGS": json.dumps({"STATICFILES_DIRS": ["/no/such/folder"]})}


def test_json_mode_writes_checks_and_start_up_commands_as_json(serve):
    """Django writes its check messages and a command's output as plain text; in JSON
    mode each line of it is a record, so every line the process writes is JSON."""
    server = serve(
        "--log-format", "json",
        "--command", "migrate contenttypes",
        "--command", "check",
        "--check-migrations-apply",
        "--processes", "2",
        migrate=False,
        env=CHECK_WARNING,
    )  # fmt: skip
    assert requests.get(server.url("/db/"), timeout=10).status_code == 200
    records = json_lines(stop(server))

    def lines_of(command: str) -> list[str]:
        return [r["message"] for r in records if r.get("command") == command]

    # Once per start, not again in each serving process.
    [warning] = [r for r in records if r.get("check_id") == "staticfiles.W004"]
    assert (warning["level"], warning["logger"]) == ("WARNING", "hurricane.startup")
    assert (
        "'/no/such/folder' in the STATICFILES_DIRS setting does not exist" in (warning["message"])
    )
    # migrate writes "Applying x..." and " OK" apart: one record for the line.
    migrated = lines_of("migrate")
    assert "  Applying contenttypes.0001_initial... OK" in migrated, migrated
    # --check-migrations-apply applied the rest through the same path.
    assert "  Applying testapp.0001_initial... OK" in migrated, migrated
    checked = [r for r in records if r.get("command") == "check"]
    assert {r["level"] for r in checked} == {"WARNING"}, checked  # the check command's stderr
    assert any("staticfiles.W004" in r["message"] for r in checked)
    assert all(r["logger"] == "hurricane.startup" for r in records if "command" in r)


def test_json_mode_start_up_failures_are_json_with_the_traceback_as_a_field(tmp_path):
    _, failed_command = run_serve(tmp_path, "--log-format", "json", "--command", "nosuchcommand")
    assert failed_command.returncode == 1
    assert failed_command.stderr == ""
    [failure] = [r for r in json_lines(failed_command.stdout) if r["level"] == "ERROR"]
    assert failure["message"] == (
        "Start-up failed: management command 'nosuchcommand' failed: "
        "CommandError(\"Unknown command: 'nosuchcommand'\")"
    )
    assert failure["traceback"].startswith("Traceback (most recent call last):")
    assert "Unknown command: 'nosuchcommand'" in failure["traceback"]

    flag = tmp_path / "liveness-fails"
    flag.touch()  # the test project's check testapp.E001 fails
    _, failed_check = run_serve(tmp_path, "--log-format", "json", TEST_LIVENESS_FAIL_FLAG=str(flag))
    assert failed_check.returncode == 1
    [banner, check] = json_lines(failed_check.stdout)
    assert banner["message"].startswith("Tornado-powered Django web server. Version: ")
    assert (check["level"], check["check_id"]) == ("ERROR", "testapp.E001")
    assert check["message"] == "?: (testapp.E001) liveness flag file exists"
    [fatal] = json_lines(failed_check.stderr)
    assert fatal["message"] == "Django's system checks found 1 error (logged above)"

    _, bad_option = run_serve(tmp_path, "--log-format", "json", "--max-headers", "many")
    assert bad_option.returncode == 1 and bad_option.stdout == ""
    [fatal] = json_lines(bad_option.stderr)
    assert (fatal["level"], fatal["logger"]) == ("ERROR", "hurricane.server.general")
    assert fatal["message"].startswith("invalid value 'many' for --max-headers")


def test_text_mode_logs_check_messages_and_an_error_stops_the_start(tmp_path, serve):
    server = serve(migrate=False, env=CHECK_WARNING)
    output = stop(server)
    assert re.search(r" WARNING hurricane\.startup \?: \(staticfiles\.W004\) ", output), output

    flag = tmp_path / "liveness-fails"
    flag.touch()
    _, failed = run_serve(tmp_path, TEST_LIVENESS_FAIL_FLAG=str(flag))
    assert failed.returncode == 1
    assert " ERROR hurricane.startup ?: (testapp.E001) liveness flag file exists" in (failed.stdout)
    assert failed.stderr.splitlines() == [
        "CommandError: Django's system checks found 1 error (logged above)"
    ]

    # --skip-checks, as Django's commands have it, from each source.
    for args, env in [(["--skip-checks"], {}), ([], {"HURRICANE_SKIP_CHECKS": "yes"})]:
        skipped = serve(*args, migrate=False, env={"TEST_LIVENESS_FAIL_FLAG": str(flag), **env})
        assert "testapp.E001" not in stop(skipped)
