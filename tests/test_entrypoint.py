"""The image's entrypoint, ``entrypoint/hurricane-entrypoint``, run here without a
container: modes, ``<NAME>_FILE`` secrets, the summary line, bad input, and the
server it execs (same PID, probes, start-up tasks, SIGTERM), on the demo project
with its SQLite database in tmp_path."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import (
    DEMO_PROJECT,
    ENTRYPOINT,
    TEST_PROJECT,
    Finished,
    delete_celery_queue,
    entrypoint_env,
    free_port,
    port_open,
    run_entrypoint,
)

PREFIX = "hurricane-entrypoint: "
REFUSED = 64


def status(url: str) -> int:
    return requests.get(url, timeout=5).status_code


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


def summary(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(PREFIX + "running ")]
    assert len(lines) == 1, stderr
    return lines[0]


def secret_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


class SignedWebhooks:
    """A real HTTP server recording each webhook's raw body and signature header."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((body, self.headers.get("X-Hurricane-Signature", "")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def signed_webhooks() -> Iterator[SignedWebhooks]:
    receiver = SignedWebhooks()
    yield receiver
    receiver.close()


# -- serve ---------------------------------------------------------------------------------


def test_serve_is_execd_in_place_runs_commands_and_ends_on_sigterm(
    start, tmp_path, signed_webhooks
):
    port, probe_port = free_port(), free_port()
    env = entrypoint_env(
        tmp_path,
        HURRICANE_COMMANDS="migrate",
        HURRICANE_PROBE_PORT=str(probe_port),
        HURRICANE_WEBHOOK_URL=signed_webhooks.url,
        HURRICANE_WEBHOOK_SECRET_FILE=secret_file(tmp_path, "webhook", "from-a-file\n"),
    )
    server = start(["serve", "--port", str(port)], env)
    probe = f"http://127.0.0.1:{probe_port}"
    server.wait_for(lambda: status(probe + "/startup") == 200, "startup 200")
    server.wait_for(lambda: status(probe + "/ready") == 200, "ready 200")

    # exec, not a child: the PID the entrypoint started as is the server, in the app folder
    assert cmdline(server.process.pid)[1:] == ["manage.py", "serve", "--port", str(port)]
    assert Path(f"/proc/{server.process.pid}/cwd").resolve() == DEMO_PROJECT.resolve()

    # HURRICANE_COMMANDS=migrate ran: the notes table exists
    app = f"http://127.0.0.1:{port}"
    assert requests.post(app + "/notes/", json={"text": "hi"}, timeout=5).status_code == 201
    notes = requests.get(app + "/notes/", timeout=5).json()["notes"]
    assert [note["text"] for note in notes] == ["hi"]

    # the secret from HURRICANE_WEBHOOK_SECRET_FILE (one newline stripped) signs webhooks
    server.wait_for(lambda: signed_webhooks.received, "the startup webhook")
    body, signature = signed_webhooks.received[0]
    assert json.loads(body)["type"] == "startup"
    expected = hmac.new(b"from-a-file", body, hashlib.sha256).hexdigest()
    assert signature == "sha256=" + expected

    line = summary(server.stderr)
    assert f"manage.py serve --port {port} in {DEMO_PROJECT} (" in line
    assert "HURRICANE_COMMANDS=migrate;" in line
    assert "HURRICANE_WEBHOOK_SECRET=*****" in line
    assert "from-a-file" not in server.output

    assert server.terminate() == 0


def test_no_arguments_serve_and_check_migrations_apply_applies_them(start, tmp_path):
    port = free_port()
    env = entrypoint_env(tmp_path, HURRICANE_PORT=str(port), HURRICANE_CHECK_MIGRATIONS="apply")
    server = start([], env)
    server.wait_for(lambda: status(f"http://127.0.0.1:{port + 1}/startup") == 200, "startup")
    assert status(f"http://127.0.0.1:{port}/notes/") == 200
    assert cmdline(server.process.pid)[1:] == ["manage.py", "serve"]
    assert server.terminate() == 0


def test_check_migrations_waits_until_manage_migrate_ran(start, tmp_path):
    port = free_port()
    env = entrypoint_env(tmp_path, HURRICANE_PORT=str(port), HURRICANE_CHECK_MIGRATIONS="true")
    server = start(["serve"], env)
    startup = f"http://127.0.0.1:{port + 1}/startup"
    server.wait_for(lambda: status(startup) == 400, "the probe port (startup 400)")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # pending migrations: it waits, never serves
        assert status(startup) == 400
        assert not port_open(port)
        time.sleep(0.2)

    migrate = run_entrypoint(["manage", "migrate", "--noinput"], env, tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    assert "manage.py migrate --noinput in" in summary(migrate.stderr)

    server.wait_for(lambda: status(startup) == 200, "startup 200 after the migration")
    assert status(f"http://127.0.0.1:{port}/notes/") == 200
    assert server.terminate() == 0


def test_manage_runs_a_one_off_command(tmp_path):
    result = run_entrypoint(["manage", "migrate", "--noinput"], entrypoint_env(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "demo.sqlite3")) as database:
        tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master")}
    assert "notes_note" in tables


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HURRICANE_PORT", "eighty", "a port number between 1 and 65535"),
        ("HURRICANE_CHECK_MIGRATIONS", "maybe", "true, false or apply"),
    ],
)
def test_a_bad_option_value_stops_serve_with_its_one_line(tmp_path, variable, value, expected):
    port = free_port()
    env = entrypoint_env(tmp_path, HURRICANE_PORT=str(port))
    env[variable] = value
    result = run_entrypoint(["serve"], env, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(PREFIX + "running ")
    flag = "--" + variable.removeprefix("HURRICANE_").lower().replace("_", "-")
    assert lines[1] == (
        f"CommandError: invalid value {value!r} for {flag} (from environment {variable}): "
        f"expected {expected}"
    )
    assert not port_open(port) and not port_open(port + 1)
    assert not (tmp_path / "demo.sqlite3").exists()


MISSPELT = (
    "Unknown environment variable HURRICANE_PROT: Hurricane does not read it; did you mean "
    "HURRICANE_PORT?"
)


def test_serve_warns_about_a_misspelt_variable_once(start, tmp_path):
    """serve, which reads the variables, warns; the entrypoint does not repeat it."""
    port = free_port()
    env = entrypoint_env(tmp_path, HURRICANE_PROT="9000")
    server = start(["serve", "--port", str(port)], env)
    server.wait_for(lambda: status(f"http://127.0.0.1:{port + 1}/startup") == 200, "startup")
    assert server.output.count(MISSPELT) == 1
    assert f"WARNING hurricane.server.general {MISSPELT}" in server.output
    assert server.terminate() == 0


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_other_programs_get_the_warning_from_the_entrypoint(tmp_path, log_format):
    env = entrypoint_env(
        tmp_path,
        HURRICANE_PROT="9000",
        HURRICANE_APPDIR="/app",
        HURRICANE_COMMAND="check",  # django-hurricane 1.6's: serve reads it, with a warning
        HURRICANE_LOG_FORMAT=log_format,
    )
    result = run_entrypoint(["manage", "check"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [
        "Unknown environment variable HURRICANE_APPDIR: Hurricane does not read it; did you "
        "mean HURRICANE_APP_DIR?",
        MISSPELT,
    ]
    _summary, *lines = result.stderr.splitlines()  # check's own output is on stdout
    if log_format == "json":
        lines = [(entry["level"], entry["message"]) for entry in map(json.loads, lines)]
        assert lines == [("WARNING", warning) for warning in warnings]
    else:
        assert lines == [PREFIX + warning for warning in warnings]


# -- consume -------------------------------------------------------------------------------


def test_consume_runs_the_handler_with_credentials_from_files(start, tmp_path, broker):
    names = broker.names()
    probe = f"http://127.0.0.1:{free_port()}"
    env = entrypoint_env(
        tmp_path,
        HURRICANE_APP_DIR=str(TEST_PROJECT),
        HURRICANE_QUEUE=names.queue,
        HURRICANE_EXCHANGE=names.exchange,
        HURRICANE_PROBE_PORT=probe.rsplit(":", 1)[1],
        AMQP_HOST="127.0.0.1",
        AMQP_USER_FILE=secret_file(tmp_path, "user", "guest\n"),
        AMQP_PASSWORD_FILE=secret_file(tmp_path, "password", "guest\n"),
    )
    handler = "testapp.consumers.AckOnlyHandler"
    consumer = start(["consume", handler], env)
    consumer.wait_for(lambda: status(probe + "/startup") == 200, "startup 200")
    assert cmdline(consumer.process.pid)[1:] == ["manage.py", "consume", handler]

    broker.publish(names.exchange, names.queue, [{"id": 1}])
    acked = "\nhurricane_amqp_messages_acked_total 1.0\n"
    consumer.wait_for(lambda: acked in requests.get(probe + "/metrics", timeout=5).text, "an ack")
    line = summary(consumer.stderr)
    assert "AMQP_PASSWORD=*****" in line and "AMQP_USER=*****" in line
    assert consumer.terminate() == 0


def test_consume_takes_the_handler_from_the_environment(tmp_path):
    env = entrypoint_env(tmp_path, HURRICANE_HANDLER="notes.NoSuchHandler")
    result = run_entrypoint(["consume", "--queue", "q"], env, tmp_path)
    assert "manage.py consume --queue q in" in summary(result.stderr)
    # past the entrypoint: consume itself reads HURRICANE_HANDLER and rejects what is missing
    assert result.returncode == 1
    assert result.stderr.splitlines()[1].startswith("CommandError: ")


# -- other programs, _FILE secrets, the summary line ----------------------------------------

PRINT_ENVIRONMENT = (
    "import json, os, sys; "
    "print(json.dumps([os.getpid(), os.getcwd(), sys.argv[1:], dict(os.environ)]))"
)


def run_python(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[Finished, dict]:
    """Run ``python -c PRINT_ENVIRONMENT ARGS`` through the entrypoint."""
    result = run_entrypoint(["python", "-c", PRINT_ENVIRONMENT, *args], env, tmp_path)
    assert result.returncode == 0, result.stderr
    pid, cwd, argv, environ = json.loads(result.stdout)
    return result, {"pid": pid, "cwd": cwd, "argv": argv, "environ": environ}


def test_another_program_is_execd_as_given_in_the_app_folder(tmp_path):
    result, seen = run_python(tmp_path, entrypoint_env(tmp_path), "a b", "")
    assert seen["pid"] == result.pid  # exec: no process left in between
    assert Path(seen["cwd"]).resolve() == DEMO_PROJECT.resolve()
    assert seen["argv"] == ["a b", ""]
    assert summary(result.stderr).startswith(f"{PREFIX}running python -c ")


def test_the_program_gets_default_signal_dispositions(tmp_path):
    """Python ignores SIGPIPE; the program must not inherit that (``yes | head`` works)."""
    result = run_entrypoint(["cat", "/proc/self/status"], entrypoint_env(tmp_path), tmp_path)
    ignored = next(line for line in result.stdout.splitlines() if line.startswith("SigIgn:"))
    mask = int(ignored.split()[1], 16)
    assert not mask & (1 << (signal.SIGPIPE - 1))
    assert not mask & (1 << (signal.SIGXFSZ - 1))


def test_file_secrets_are_resolved_and_masked(tmp_path):
    env = entrypoint_env(
        tmp_path,
        HURRICANE_WEBHOOK_SECRET_FILE=secret_file(tmp_path, "webhook", "tok en\n\n"),
        AMQP_PASSWORD_FILE=secret_file(tmp_path, "amqp", "no newline"),
        DJANGO_SECRET_KEY_FILE=secret_file(tmp_path, "django", "crlf\r\n"),
        # Any other variable only when listed.
        HURRICANE_FILE_VARS="SENTRY_DSN, DATABASE_PASSWORD",
        DATABASE_PASSWORD_FILE=secret_file(tmp_path, "database", "listed"),
    )
    result, seen = run_python(tmp_path, env)
    environ, stderr = seen["environ"], result.stderr
    assert environ["HURRICANE_WEBHOOK_SECRET"] == "tok en\n"  # one trailing newline stripped
    assert environ["AMQP_PASSWORD"] == "no newline"
    assert environ["DJANGO_SECRET_KEY"] == "crlf"
    assert environ["DATABASE_PASSWORD"] == "listed"
    assert not [name for name in environ if name.endswith("_FILE")]
    # Handed on, so that Hurricane's own logs mask these values too.
    assert environ["HURRICANE_FROM_FILES"] == (
        "AMQP_PASSWORD,DATABASE_PASSWORD,DJANGO_SECRET_KEY,HURRICANE_WEBHOOK_SECRET"
    )

    line = summary(stderr)
    assert stderr.count("\n") == 1
    for name in ("AMQP_PASSWORD", "DATABASE_PASSWORD", "DJANGO_SECRET_KEY"):
        assert f"{name}=*****" in line
    for secret in ("tok en", "no newline", "crlf", "listed"):
        assert secret not in stderr


def test_other_variables_ending_in_file_are_left_as_they_are(tmp_path):
    """Programs and platforms set variables ending in _FILE that are no secret to
    read: a config another program reads, a token file the platform rotates in
    place, a log path that does not exist yet, a service link's port."""
    new_relic = secret_file(tmp_path, "newrelic.ini", "[newrelic]\nlicense_key = x\n")
    eks_token = secret_file(tmp_path, "eks-pod-identity-token", "rotated-token")
    others = {
        "NEW_RELIC_CONFIG_FILE": new_relic,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": eks_token,
        "LOG_FILE": str(tmp_path / "logs" / "app.log"),
        "BILLING_SERVICE_PORT_FILE": "8080",
        "SSL_CERT_FILE": str(tmp_path / "bundle.pem"),
    }
    result, seen = run_python(tmp_path, entrypoint_env(tmp_path, **others))
    environ = seen["environ"]
    for name, value in others.items():
        assert environ[name] == value
        assert name.removesuffix("_FILE") not in environ
    assert "HURRICANE_FROM_FILES" not in environ
    assert "rotated-token" not in result.stderr and "_FILE" not in summary(result.stderr)


def test_the_summary_line_lists_the_settings_on_one_line_with_secrets_masked(tmp_path):
    env = entrypoint_env(
        tmp_path,
        HURRICANE_COMMANDS="migrate\ncollectstatic --noinput",
        HURRICANE_WEBHOOK_SECRET="hunter2",
        # Slack's credential is in the URL's path: the line shows its public words only.
        HURRICANE_WEBHOOK_URL="https://hooks.slack.com/services/T0/B0/hunter7",
        AMQP_HOST="rabbitmq",
        AMQP_PASSWORD="hunter3",
        AMQP_PASS="hunter8",
        AMQP_PWD="hunter9",
        DJANGO_SETTINGS_MODULE="demo.settings",
        MY_API_KEY="hunter4",
        UNRELATED="shown nowhere",
    )
    result, seen = run_python(
        tmp_path, env, "--amqp-password", "hunter5", "--webhook-secret=hunter6"
    )
    stderr = result.stderr
    assert seen["environ"]["HURRICANE_COMMANDS"] == "migrate\ncollectstatic --noinput"
    assert seen["environ"]["AMQP_PASSWORD"] == "hunter3"  # passed through unchanged
    assert stderr.count("\n") == 1
    line = summary(stderr)
    assert line.endswith(
        f" --amqp-password ***** --webhook-secret=***** in {DEMO_PROJECT} ("
        f"HURRICANE_APP_DIR={DEMO_PROJECT}; HURRICANE_COMMANDS=migrate\\ncollectstatic --noinput; "
        "HURRICANE_WEBHOOK_SECRET=*****; "
        "HURRICANE_WEBHOOK_URL=https://hooks.slack.com/services/*****/*****/*****; "
        "AMQP_HOST=rabbitmq; AMQP_PASS=*****; AMQP_PASSWORD=*****; AMQP_PWD=*****; "
        "DJANGO_SETTINGS_MODULE=demo.settings)"
    )
    assert "hunter" not in stderr and "UNRELATED" not in stderr


def test_the_script_runs_by_itself(tmp_path):
    """The image runs it by its shebang, from PATH."""
    assert os.access(ENTRYPOINT, os.X_OK)
    result = subprocess.run(
        [str(ENTRYPOINT), "true"],
        env=entrypoint_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert (
        summary(result.stderr)
        == f"{PREFIX}running true in {DEMO_PROJECT} (HURRICANE_APP_DIR={DEMO_PROJECT})"
    )


# -- help and the dry run -------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_explains_the_modes_and_the_variables(tmp_path, flag):
    result = run_entrypoint([flag], entrypoint_env(tmp_path), tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: hurricane-entrypoint [MODE [ARGS...]]\n")
    for words in (
        "serve [ARGS...]",
        "consume HANDLER [ARGS...]",
        "manage ARGS...",
        "PROGRAM [ARGS...]",
        "HURRICANE_APP_DIR",
        "<NAME>_FILE",
        "HURRICANE_FILE_VARS",
        "HURRICANE_DRY_RUN=1",
        "HURRICANE_LOG_FORMAT",
        "docs/options.md",
    ):
        assert words in result.stdout
    assert result.stderr == ""


def dry_run_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(PREFIX + "dry run: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_dry_run_of_serve_prints_its_steps_masked_and_starts_nothing(tmp_path):
    port = free_port()
    env = entrypoint_env(
        tmp_path,
        HURRICANE_DRY_RUN="1",
        HURRICANE_PORT=str(port),
        HURRICANE_CHECK_MIGRATIONS="apply",
        HURRICANE_DEBUGGER="true",
        HURRICANE_COMMANDS_FILE=secret_file(tmp_path, "commands", "createsuperuser --x s3cr3t\n"),
        HURRICANE_WEBHOOK_URL="https://hooks.slack.com/services/T0/B0/tokentoken",
    )
    result = run_entrypoint(["serve", "--static"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    # the whole exec line, with the interpreter's path
    assert dry_run_line(result.stderr).startswith(
        f"{PREFIX}dry run: would run {sys.executable} manage.py serve --static in {DEMO_PROJECT} ("
    )
    out = result.stdout
    assert out.startswith("Dry run of serve: nothing is started. With these options it would:\n")
    assert f"on port {port + 1}: startup /startup" in out
    assert "listen for a debugger (debugpy) on port 5678" in out
    assert "run the management commands *****" in out  # read from a file: a secret
    assert "wait for the databases, then apply pending migrations" in out
    assert f"serve the app on port {port} (every interface)" in out
    assert "and the static files" in out
    assert f"--port = {port}  (environment HURRICANE_PORT)" in out
    assert "--webhook-url = https://hooks.slack.com/services/*****/*****/*****" in out
    assert "s3cr3t" not in result.stderr + out and "tokentoken" not in result.stderr + out
    # nothing ran: no database made by migrate, nobody on the port
    assert not (tmp_path / "demo.sqlite3").exists()
    assert not port_open(port)


def test_the_dry_run_of_consume_names_broker_queue_and_handler(tmp_path):
    env = entrypoint_env(
        tmp_path,
        HURRICANE_DRY_RUN="yes",
        AMQP_HOST="broker.example",
        AMQP_PASSWORD_FILE=secret_file(tmp_path, "password", "p4ss\n"),
    )
    result = run_entrypoint(
        ["consume", "demo.consumers.NoteHandler", "--queue", "notes"], env, tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "AMQP_PASSWORD=*****" in dry_run_line(result.stderr)
    out = result.stdout
    assert "connect to the broker at broker.example:5672, vhost /, as guest" in out
    assert "consume notes with the handler demo.consumers.NoteHandler, 10 messages" in out
    assert "--amqp-password = *****  (environment AMQP_PASSWORD)" in out
    assert "p4ss" not in result.stderr + out


def test_the_dry_run_refuses_what_a_start_would(tmp_path):
    env = entrypoint_env(tmp_path, HURRICANE_DRY_RUN="1", HURRICANE_FORBID_DEBUGGER="true")
    result = run_entrypoint(["serve", "--debugger"], env, tmp_path)
    assert result.returncode == 1
    assert "refusing to start: --debugger (from command line --debugger)" in result.stderr
    assert "Dry run of serve" not in result.stdout


def test_the_dry_run_of_another_program_runs_nothing(tmp_path):
    env = entrypoint_env(tmp_path, HURRICANE_DRY_RUN="on")
    marker = tmp_path / "ran"
    result = run_entrypoint(["touch", str(marker)], env, tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert dry_run_line(result.stderr) == (
        f"{PREFIX}dry run: would run touch {marker} in {DEMO_PROJECT} "
        f"(HURRICANE_APP_DIR={DEMO_PROJECT}; HURRICANE_DRY_RUN=on)"
    )
    assert not marker.exists()


# -- bad input: one line, exit 64, nothing started -----------------------------------------


EXPECTED_MODES = (
    "expected serve, consume HANDLER, manage ARGS..., celery-worker, celery-beat "
    "or a program on PATH"
)

# (arguments, environment changes, the one line expected); {tmp} is tmp_path, where
# the test made: empty/ (a folder), not-executable, big (64 KiB + 1), token.
BAD_INPUTS = {
    "no manage.py": (
        ["serve"],
        {"HURRICANE_APP_DIR": "{tmp}/empty"},
        "no manage.py in {tmp}/empty (set HURRICANE_APP_DIR to the folder that holds it)",
    ),
    "no app folder": (
        ["manage", "check"],
        {"HURRICANE_APP_DIR": "{tmp}/missing"},
        "no folder {tmp}/missing (set HURRICANE_APP_DIR to the folder that holds manage.py)",
    ),
    "empty app folder variable": (
        ["serve"],
        {"HURRICANE_APP_DIR": ""},
        "HURRICANE_APP_DIR is empty (set HURRICANE_APP_DIR to the folder that holds manage.py)",
    ),
    "unknown mode": (["xyz"], {}, f"unknown mode or program 'xyz' ({EXPECTED_MODES})"),
    "missing program path": (
        ["./missing.sh"],
        {},
        f"unknown mode or program './missing.sh' ({EXPECTED_MODES})",
    ),
    "program not executable": (
        ["{tmp}/not-executable"],
        {},
        "cannot run '{tmp}/not-executable': it is not executable",
    ),
    "empty manage": (
        ["manage"],
        {},
        "manage needs a management command: manage ARGS... (e.g. manage migrate --noinput)",
    ),
    "consume without handler": (
        ["consume", "--queue", "q"],
        {},
        "consume needs a handler: consume HANDLER [OPTIONS...] "
        "(e.g. consume myapp.consumers.MyHandler), or set HURRICANE_HANDLER",
    ),
    "missing _FILE": (
        ["serve"],
        {"AMQP_PASSWORD_FILE": "{tmp}/nope"},
        "cannot read AMQP_PASSWORD_FILE={tmp}/nope: No such file or directory",
    ),
    "_FILE is a folder": (
        ["serve"],
        {"DJANGO_SECRET_KEY_FILE": "{tmp}/empty"},
        "cannot read DJANGO_SECRET_KEY_FILE={tmp}/empty: Is a directory",
    ),
    "empty _FILE": (
        ["serve"],
        {"HURRICANE_WEBHOOK_SECRET_FILE": ""},
        "HURRICANE_WEBHOOK_SECRET_FILE is empty (set it to the file that holds the value)",
    ),
    "_FILE too large": (
        ["serve"],
        {"MY_TOKEN_FILE": "{tmp}/big", "HURRICANE_FILE_VARS": "MY_TOKEN"},
        "MY_TOKEN_FILE={tmp}/big is larger than 64 KiB; an environment variable cannot hold it",
    ),
    "both NAME and NAME_FILE": (
        ["serve"],
        {"AMQP_PASSWORD": "t", "AMQP_PASSWORD_FILE": "{tmp}/token"},
        "both AMQP_PASSWORD and AMQP_PASSWORD_FILE are set; set only one of them",
    ),
    "a _FILE in HURRICANE_FILE_VARS": (
        ["serve"],
        {"HURRICANE_FILE_VARS": "SENTRY_DSN,DATABASE_PASSWORD_FILE"},
        "HURRICANE_FILE_VARS lists DATABASE_PASSWORD_FILE: list the variable it sets, "
        "DATABASE_PASSWORD, without _FILE",
    ),
    "dry run neither true nor false": (
        ["serve"],
        {"HURRICANE_DRY_RUN": "maybe"},
        "HURRICANE_DRY_RUN='maybe' is neither true nor false (expected 1 or 0)",
    ),
    "no name in HURRICANE_FILE_VARS": (
        ["serve"],
        {"HURRICANE_FILE_VARS": "SENTRY_DSN;DB-PASSWORD"},
        "HURRICANE_FILE_VARS lists 'SENTRY_DSN;DB-PASSWORD', which is no variable name "
        "(expected names such as DATABASE_PASSWORD, separated by commas)",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_stops_with_one_line(tmp_path, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    (tmp_path / "big").write_text("x" * (64 * 1024 + 1))
    (tmp_path / "token").write_text("t")
    args, changes, expected = BAD_INPUTS[case]
    tmp = str(tmp_path)
    args = [arg.format(tmp=tmp) for arg in args]
    changes = {name: value.format(tmp=tmp) for name, value in changes.items()}
    result = run_entrypoint(args, entrypoint_env(tmp_path, **changes), tmp_path, timeout=30)
    assert result.returncode == REFUSED
    assert result.stderr == PREFIX + expected.format(tmp=tmp) + "\n"
    assert result.stdout == ""
    assert not (tmp_path / "demo.sqlite3").exists()


# -- celery-worker and celery-beat -------------------------------------------------------------


def celery_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test project, whose Celery app is testapp.celery_app."""
    extra = {
        "HURRICANE_APP_DIR": str(TEST_PROJECT),
        "HURRICANE_CELERY_APP": "testapp.celery_app",
    } | extra
    return entrypoint_env(tmp_path, **extra)


def test_celery_worker_is_execd_in_place_in_the_app_folder_and_ends_on_sigterm(start, tmp_path):
    probe_port = free_port()
    queue = f"hurricane-entrypoint-test-{os.getpid()}-{time.monotonic_ns()}"
    env = celery_env(tmp_path, HURRICANE_PROBE_PORT=str(probe_port), TEST_CELERY_QUEUE=queue)
    worker = start(["celery-worker", "--loglevel", "INFO", "-c", "1"], env)
    try:
        probe = f"http://127.0.0.1:{probe_port}"
        worker.wait_for(lambda: status(probe + "/startup") == 200, "startup 200")
        worker.wait_for(lambda: status(probe + "/ready") == 200, "ready 200")
        # exec, not a child: the PID the entrypoint started as is the worker
        assert cmdline(worker.process.pid)[1:] == [
            "-m", "celery", "-A", "testapp.celery_app", "worker", "--loglevel", "INFO", "-c", "1",
        ]  # fmt: skip
        assert Path(f"/proc/{worker.process.pid}/cwd").resolve() == TEST_PROJECT.resolve()
        line = summary(worker.stderr)
        assert "running python -m celery -A testapp.celery_app worker --loglevel INFO -c 1" in line
        assert "HURRICANE_CELERY_APP=testapp.celery_app" in line
        assert worker.terminate() == 0
    finally:
        delete_celery_queue(queue)


def test_celery_beat_dry_run_names_the_command_and_starts_nothing(tmp_path):
    env = celery_env(tmp_path, HURRICANE_DRY_RUN="1")
    finished = run_entrypoint(["celery-beat", "--max-interval", "5"], env, tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert (
        f"{PREFIX}dry run: would run {sys.executable} -m celery -A testapp.celery_app beat "
        f"--max-interval 5 in {TEST_PROJECT}"
    ) in finished.stderr


def test_celery_modes_take_the_app_from_their_arguments_too(tmp_path):
    env = celery_env(tmp_path, HURRICANE_DRY_RUN="1")
    del env["HURRICANE_CELERY_APP"]
    finished = run_entrypoint(["celery-worker", "-A", "other.app"], env, tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert "-m celery worker -A other.app in" in finished.stderr


def test_celery_modes_without_an_app_stop_with_one_line(tmp_path):
    env = celery_env(tmp_path)
    del env["HURRICANE_CELERY_APP"]
    finished = run_entrypoint(["celery-worker"], env, tmp_path)
    assert finished.returncode == REFUSED
    assert finished.stderr == (
        f"{PREFIX}celery-worker needs the Celery app: set HURRICANE_CELERY_APP "
        "(e.g. proj.celery:app) or pass -A APP\n"
    )
