"""The options resolver: precedence, parsing, and one clear line for a bad value."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import types

import pytest
import requests

from conftest import (
    ROOT,
    TEST_PROJECT,
    ServeProcess,
    base_env,
    consumer_args,
    free_port,
    port_open,
    run_serve,
)
from hurricane.config.options import (
    AMQP_CREDENTIAL_OPTIONS,
    CONSUME_OPTIONS,
    DJANGO_HURRICANE_16_NAMES,
    KNOWN_NAMES,
    OLD_NAMES,
    SERVE_OPTIONS,
    ConsumeOptions,
    OptionError,
    Options,
    ServeOptions,
    resolve,
    resolve_values,
    unknown_names,
)
from hurricane.http import eventloop


def settings(**values):
    return types.SimpleNamespace(**values)


def test_defaults():
    options = resolve(SERVE_OPTIONS, {}, settings(), {})
    assert options.port == 8000
    assert options.probe_port is None
    assert options.req_queue_len == 10
    assert options.metrics == "/metrics"
    assert options.debugger_port == 5678
    assert options.command == ()
    assert options.static is False
    assert options.shutdown_delay == 0.0
    assert options.graceful_timeout == 30.0
    assert options.loop == "auto"


def test_consume_defaults():
    options = resolve(CONSUME_OPTIONS, {}, settings(), {})
    assert options.probe_port == 8001
    assert options.amqp_port == 5672
    assert options.amqp_vhost == "/"
    assert options.amqp_host is None
    assert options.prefetch == 10
    assert options.reconnect is False
    assert options.requeue_on_error is True  # up to --max-deliveries
    assert options.max_deliveries == 5
    assert options.max_message_size == 16 * 1024**2
    assert options.queue_type == "classic"


@pytest.mark.parametrize(
    "options_class, table",
    [(ServeOptions, SERVE_OPTIONS), (ConsumeOptions, CONSUME_OPTIONS)],
    ids=["serve", "consume"],
)
def test_option_classes_have_one_field_per_option_of_their_table(options_class, table):
    """The typed classes and the option tables cannot drift apart: a field for every
    option, an option for every field (besides where each value came from, and the
    warnings), and the class resolves its own table."""
    fields = [field.name for field in dataclasses.fields(options_class)]
    names = [option.name for option in table]
    assert len(set(names)) == len(names)
    assert sorted(fields) == sorted([*names, "sources", "warnings"])
    assert options_class.option_table is table
    resolved = resolve(table, {}, settings(), {})
    assert type(resolved) is options_class
    assert set(resolved.sources) == set(names)
    shared = {field.name for field in dataclasses.fields(Options)}
    assert shared <= set(fields)


def test_resolved_options_are_frozen():
    options = resolve(SERVE_OPTIONS, {}, settings(), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.port = 9000
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.not_an_option = 1
    assert options.port == 8000
    consume = resolve(CONSUME_OPTIONS, {}, settings(), {"AMQP_PASSWORD": "pw"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        consume.amqp_password = "other"
    changed = dataclasses.replace(options, port=9000)
    assert (changed.port, options.port) == (9000, 8000)
    assert isinstance(options, Options) and isinstance(consume, Options)
    assert repr(consume).startswith("ConsumeOptions(") and "pw" not in repr(consume)


def test_resolve_wants_a_table_of_a_command_and_resolve_values_any():
    with pytest.raises(TypeError, match="no options class"):
        resolve(AMQP_CREDENTIAL_OPTIONS, {}, settings(), {})
    resolved = resolve_values(AMQP_CREDENTIAL_OPTIONS, {}, settings(AMQP_USER="me"), {})
    assert resolved.values == {"amqp_user": "me", "amqp_password": None}
    assert resolved.sources == {"amqp_user": "setting AMQP_USER", "amqp_password": "default"}


def test_child_options_turn_off_what_the_supervisor_does():
    from hurricane.serve.supervisor import child_options

    environ = {
        "HURRICANE_COMMANDS": "check",
        "HURRICANE_WEBHOOK_URL": "http://x",
        "HURRICANE_X": "1",
    }
    options = resolve(SERVE_OPTIONS, {"processes": "2", "debugger": True}, settings(), environ)
    assert options.warnings  # HURRICANE_X
    child = child_options(options)
    assert type(child) is ServeOptions and child.processes == 2
    assert (child.no_probe, child.command, child.webhook_url, child.debugger) == (
        True,
        (),
        None,
        False,
    )
    assert child.warnings == [] and child.sources == options.sources
    assert (options.no_probe, options.command) == (False, (("check",),))


def test_broker_settings_command_line_then_setting_then_environment():
    environ = {
        "AMQP_HOST": "env-host",
        "AMQP_PORT": "5673",
        "AMQP_VHOST": "env-vhost",
        "AMQP_USER": "env-user",
        "AMQP_PASSWORD": "env secret ",
        "HURRICANE_PREFETCH": "50",
    }
    conf = settings(AMQP_HOST="setting-host", AMQP_PORT=5674, AMQP_USER="setting-user")
    options = resolve(CONSUME_OPTIONS, {"amqp_host": "cli-host"}, conf, environ)
    assert options.amqp_host == "cli-host"
    assert options.amqp_port == 5674
    assert options.sources["amqp_port"] == "setting AMQP_PORT"
    assert options.amqp_vhost == "env-vhost"
    assert options.sources["amqp_vhost"] == "environment AMQP_VHOST"
    assert options.amqp_user == "setting-user"
    assert options.amqp_password == "env secret "  # a password is taken as it is
    # So is the webhook's secret: a receiver checks the signature with it as it is.
    assert (
        resolve(SERVE_OPTIONS, {}, settings(), {"HURRICANE_WEBHOOK_SECRET": " s "}).webhook_secret
        == " s "
    )
    assert options.prefetch == 50


def test_command_line_beats_setting_beats_environment():
    environ = {"HURRICANE_PORT": "9001", "HURRICANE_REQ_QUEUE_LEN": "7", "HURRICANE_WORKERS": "3"}
    conf = settings(HURRICANE_PORT=9002, HURRICANE_REQ_QUEUE_LEN=8)
    options = resolve(SERVE_OPTIONS, {"port": "9003"}, conf, environ)
    assert options.port == 9003
    assert options.sources["port"] == "command line --port"
    assert options.req_queue_len == 8
    assert options.sources["req_queue_len"] == "setting HURRICANE_REQ_QUEUE_LEN"
    assert options.workers == 3
    assert options.sources["workers"] == "environment HURRICANE_WORKERS"


OLD = "django-hurricane 1.6's name"


def test_django_hurricane_16_settings_come_after_the_hurricane_names():
    """Command line, setting HURRICANE_X, environment HURRICANE_X, then 1.6's setting X;
    each 1.6 name given is one warning, saying whether it was used."""
    conf = settings(
        PORT=9004,
        LIVENESS_PROBE="/veryalive",
        MEDIA=True,
        STATIC=True,
        HURRICANE_STATIC=False,
        WORKERS=3,
    )
    environ = {"PORT": "9005", "HURRICANE_MEDIA": "false"}  # PORT: the platform's variable
    options = resolve(SERVE_OPTIONS, {"workers": "2"}, conf, environ)
    assert (options.port, options.sources["port"]) == (9004, f"setting PORT, {OLD}")
    assert options.liveness_probe == "/veryalive"
    assert (options.media, options.static, options.workers) == (False, False, 2)
    assert options.warnings == [
        f"Deprecated setting PORT ({OLD}) sets --port: rename it HURRICANE_PORT",
        f"Deprecated setting LIVENESS_PROBE ({OLD}) sets --liveness-probe: rename it "
        "HURRICANE_LIVENESS_PROBE",
        f"Deprecated setting STATIC ({OLD}) is ignored, for --static comes from setting "
        "HURRICANE_STATIC: remove it, or rename it HURRICANE_STATIC",
        f"Deprecated setting MEDIA ({OLD}) is ignored, for --media comes from environment "
        "HURRICANE_MEDIA: remove it, or rename it HURRICANE_MEDIA",
        f"Deprecated setting WORKERS ({OLD}) is ignored, for --workers comes from command "
        "line --workers: remove it, or rename it HURRICANE_WORKERS",
    ]


def test_djangos_debug_never_turns_on_debug_nor_does_consume_read_16_names():
    conf = settings(DEBUG=True, LIVENESS_PROBE="/veryalive", WEBHOOK_URL="http://x")
    serve_options = resolve(SERVE_OPTIONS, {}, settings(DEBUG=True), {})
    assert serve_options.debug is False and serve_options.warnings == []
    consume_options = resolve(CONSUME_OPTIONS, {}, conf, {})
    assert consume_options.debug is False and consume_options.liveness_probe == "/alive"
    assert consume_options.webhook_url is None and consume_options.warnings == []
    assert "debug" not in DJANGO_HURRICANE_16_NAMES


def test_16_command_variable_and_setting():
    old_shape = settings(COMMAND=[["record f from-setting"], ["check"]])
    assert resolve(SERVE_OPTIONS, {}, old_shape, {}).command == (
        ("record", "f", "from-setting"),
        ("check",),
    )
    environ = {"HURRICANE_COMMAND": "migrate --noinput\ncheck"}
    options = resolve(SERVE_OPTIONS, {}, old_shape, environ)
    assert options.command == (("migrate", "--noinput"), ("check",))
    assert options.warnings == [
        f"Deprecated environment variable HURRICANE_COMMAND ({OLD}) sets --command: rename "
        "it HURRICANE_COMMANDS",
        f"Deprecated setting COMMAND ({OLD}) is ignored, for --command comes from "
        f"environment HURRICANE_COMMAND, {OLD}: remove it, or rename it HURRICANE_COMMANDS",
    ]
    environ["HURRICANE_COMMANDS"] = "check"
    assert resolve(SERVE_OPTIONS, {}, old_shape, environ).command == (("check",),)


def test_a_bad_16_value_is_an_error_unless_a_hurricane_name_wins():
    with pytest.raises(OptionError) as raised:
        resolve(SERVE_OPTIONS, {}, settings(STATIC="/static/"), {})
    assert str(raised.value) == (
        f"invalid value '/static/' for --static (from setting STATIC, {OLD}): expected a "
        "boolean (true/false, 1/0, yes/no)"
    )
    shadowed = resolve(SERVE_OPTIONS, {}, settings(STATIC="/static/"), {"HURRICANE_STATIC": "0"})
    assert shadowed.static is False


@pytest.mark.parametrize(
    "name,closest",
    [
        ("HURRICANE_PROT", "HURRICANE_PORT"),
        ("HURRICANE_SHUTDOWN_DELAI", "HURRICANE_SHUTDOWN_DELAY"),
        ("HURRICANE_PREFECH", "HURRICANE_PREFETCH"),
        ("HURRICANE_APPDIR", "HURRICANE_APP_DIR"),
        ("hurricane_workers", "HURRICANE_WORKERS"),
    ],
)
def test_a_misspelt_name_is_warned_about_with_the_closest(name, closest):
    assert unknown_names([name], "environment variable") == [
        f"Unknown environment variable {name}: Hurricane does not read it; did you mean {closest}?"
    ]


def test_unknown_names_without_a_close_one_and_file_variables():
    assert unknown_names(["HURRICANE_ZEBRA"], "setting") == [
        "Unknown setting HURRICANE_ZEBRA: Hurricane does not read it"
    ]
    assert unknown_names(["HURRICANE_WEBHOOK_SECRET_FILE"], "environment variable") == [
        "Environment variable HURRICANE_WEBHOOK_SECRET_FILE is not read: the image's "
        "entrypoint reads <NAME>_FILE variables; here, set HURRICANE_WEBHOOK_SECRET itself"
    ]
    known = [*KNOWN_NAMES, *OLD_NAMES, "PORT", "AMQP_HOST", "HURRICANEPORT"]
    assert unknown_names(known, "environment variable") == []


def test_every_hurricane_name_the_code_uses_is_known():
    """The runtime, the entrypoint, the image and the manifests use no HURRICANE_* name
    that Hurricane would warn about as unknown (<NAME>_FILE: the entrypoint reads it)."""
    tracked = subprocess.run(
        ["git", "ls-files", "Dockerfile", "docker-bake.hcl", "hurricane", "entrypoint",
         "image", "k8s-manifests", "examples"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    files = [ROOT / name for name in tracked]  # not what tests built under image/.cache
    used = set()
    for path in files:
        if path.is_file() and path.suffix != ".pyc":
            found = re.findall(r"\bHURRICANE_[A-Z0-9_]*\b", path.read_text(errors="replace"))
            used |= {name.removesuffix("_FILE") for name in found}
    used.discard("HURRICANE_")  # a prefix, in the entrypoint and the manifests' comments
    assert "HURRICANE_APP_DIR" in used and unknown_names(used, "setting") == []


def test_serve_reads_the_settings_of_django_hurricane_16(tmp_path):
    """A project's 1.6 settings, unchanged: the app on PORT, the liveness probe on
    LIVENESS_PROBE, media served, COMMAND run; a readiness path from the environment
    beats READINESS_PROBE; Django's DEBUG = True does not turn on --debug (whose DEBUG
    lines would show). Each 1.6 name is one warning."""
    port = free_port()
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "x.txt").write_text("a file\n")
    record = tmp_path / "record.txt"
    old_settings = {
        "PORT": port,
        "LIVENESS_PROBE": "/veryalive",
        "READINESS_PROBE": "/from-setting",
        "MEDIA": True,
        "COMMAND": [[f"record {record} from-the-setting"]],
    }
    env = base_env(
        tmp_path,
        TEST_SETTINGS=json.dumps(old_settings),
        TEST_DEBUG="1",
        HURRICANE_READINESS_PROBE="/from-env",
    )
    server = ServeProcess([], env, TEST_PROJECT, tmp_path / "serve.log", port, port + 1)
    try:
        server.wait_started()
        assert requests.get(server.url("/hello/"), timeout=5).status_code == 200
        assert requests.get(server.url("/media/x.txt"), timeout=5).text == "a file\n"
        assert requests.get(server.probe("/veryalive"), timeout=5).status_code == 200
        assert requests.get(server.probe("/from-env"), timeout=5).status_code != 404
        assert requests.get(server.probe("/from-setting"), timeout=5).status_code == 404
        assert record.read_text() == "from-the-setting\n"
        output = server.output
    finally:
        server.kill()
    for name in ("PORT", "LIVENESS_PROBE", "MEDIA", "COMMAND"):
        assert output.count(f"WARNING hurricane.server.general Deprecated setting {name} (") == 1
    assert (
        output.count(
            f"Deprecated setting READINESS_PROBE ({OLD}) is ignored, for --readiness-probe comes "
            "from environment HURRICANE_READINESS_PROBE"
        )
        == 1
    )
    assert " DEBUG " not in output


@pytest.mark.parametrize("restarting", [["--processes", "2"], ["--autoreload"]])
def test_serve_warns_once_about_misspelt_names(serve, restarting):
    """Once per start: not again in each serving process of --processes, nor in the
    process the autoreloader runs."""
    server = serve(
        *restarting,
        env={
            "HURRICANE_PROT": "9000",
            "TEST_SETTINGS": json.dumps({"HURRICANE_WORKRS": 4}),
        },
    )
    server.wait_for(lambda: "Serving on port" in server.output, what="serving")
    output = server.output
    assert (
        output.count(
            "WARNING hurricane.server.general Unknown environment variable HURRICANE_PROT: "
            "Hurricane does not read it; did you mean HURRICANE_PORT?"
        )
        == 1
    )
    assert (
        output.count(
            "WARNING hurricane.server.general Unknown setting HURRICANE_WORKRS: Hurricane does "
            "not read it; did you mean HURRICANE_WORKERS?"
        )
        == 1
    )


def test_consume_warns_about_misspelt_names_and_reads_no_16_name(consume, broker):
    consumer = consume(
        *consumer_args(broker.names()),
        env={
            "HURRICANE_PREFECH": "5",
            "TEST_SETTINGS": json.dumps({"LIVENESS_PROBE": "/veryalive"}),
        },
    )
    assert requests.get(consumer.probe("/alive"), timeout=5).status_code == 200
    assert (
        consumer.output.count(
            "Unknown environment variable HURRICANE_PREFECH: Hurricane does not read it; did you "
            "mean HURRICANE_PREFETCH?"
        )
        == 1
    )
    assert "LIVENESS_PROBE" not in consumer.output


@pytest.mark.parametrize(
    "word,expected",
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("TRUE", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_booleans_from_the_environment(word, expected):
    assert resolve(SERVE_OPTIONS, {}, settings(), {"HURRICANE_MEDIA": word}).media is expected


def test_boolean_setting_as_python_value():
    assert resolve(SERVE_OPTIONS, {}, settings(HURRICANE_STATIC=True), {}).static is True


def test_commands_one_per_line_with_arguments():
    environ = {"HURRICANE_COMMANDS": "migrate --noinput\n\n  compilemessages --no-color \n"}
    options = resolve(SERVE_OPTIONS, {}, settings(), environ)
    assert options.command == (("migrate", "--noinput"), ("compilemessages", "--no-color"))
    cli = resolve(SERVE_OPTIONS, {"command": ["record '/tmp/a b' x"]}, settings(), environ)
    assert cli.command == (("record", "/tmp/a b", "x"),)
    listed = resolve(SERVE_OPTIONS, {}, settings(HURRICANE_COMMANDS=["migrate", "check"]), {})
    assert listed.command == (("migrate",), ("check",))


def test_migration_check_modes():
    def mode(value):
        return resolve(SERVE_OPTIONS, {}, settings(), {"HURRICANE_CHECK_MIGRATIONS": value})

    assert mode("true").check_migrations is True
    assert mode("apply").check_migrations == "apply"
    assert mode("false").check_migrations is False


def test_paths_are_normalised():
    options = resolve(
        SERVE_OPTIONS, {"readiness_probe": "ready/", "metrics": "/prom/"}, settings(), {}
    )
    assert options.readiness_probe == "/ready"
    assert options.metrics == "/prom"


def test_sizes_take_units():
    environ = {"HURRICANE_MAX_BODY_SIZE": "10MB", "HURRICANE_MAX_BUFFER_SIZE": "512k"}
    options = resolve(SERVE_OPTIONS, {}, settings(), environ)
    assert options.max_body_size == 10 * 1024 * 1024
    assert options.max_buffer_size == 512 * 1024


@pytest.mark.parametrize(
    "variable,value,expected",
    [
        ("HURRICANE_PORT", "eighty", "a port number"),
        ("HURRICANE_PORT", "70000", "a port number"),
        ("HURRICANE_MEDIA", "maybe", "a boolean"),
        ("HURRICANE_WORKERS", "0", "at least 1"),
        ("HURRICANE_MAX_BODY_SIZE", "lots", "a size in bytes"),
        ("HURRICANE_WEBHOOK_URL", "ftp://x", "URL"),
        ("HURRICANE_CHECK_MIGRATIONS", "sometimes", "true, false or apply"),
        ("HURRICANE_SHUTDOWN_DELAY", "-1", "seconds"),
        ("HURRICANE_READINESS_PROBE", "/", "URL path"),
        ("HURRICANE_LOOP", "libuv", "auto, uvloop or asyncio"),
        ("HURRICANE_CPU_AFFINITY", "0-1", "auto or off"),
    ],
)
def test_bad_values_name_option_source_and_expectation(variable, value, expected):
    with pytest.raises(OptionError) as raised:
        resolve(SERVE_OPTIONS, {}, settings(), {variable: value})
    message = str(raised.value)
    assert "\n" not in message
    assert f"environment {variable}" in message
    assert expected in message
    assert repr(value) in message


@pytest.mark.parametrize(
    "name,module", [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_loop_option_makes_that_loop(name, module):
    options = resolve(SERVE_OPTIONS, {"loop": name}, settings(), {})
    assert options.loop == name
    loop = eventloop.loop_factory(options.loop)()
    try:
        assert type(loop).__module__.startswith(module), type(loop)
    finally:
        loop.close()


def test_loop_without_uvloop_installed(monkeypatch):
    """Where uvloop is not installed (Windows, PyPy), auto falls back to asyncio's own
    loop, and asking for uvloop by name is a clear error instead."""
    import hurricane.config.options

    # The option's check (hurricane.config.options) and the loop's choice (eventloop) ask.
    monkeypatch.setattr(hurricane.config.options, "uvloop_installed", lambda: False)
    monkeypatch.setattr(eventloop, "uvloop_installed", lambda: False)
    options = resolve(SERVE_OPTIONS, {}, settings(), {})
    assert eventloop.loop_kind(options.loop) == "asyncio"
    loop = eventloop.loop_factory(options.loop)()
    try:
        assert type(loop).__module__.startswith("asyncio"), type(loop)
    finally:
        loop.close()
    with pytest.raises(OptionError) as raised:
        resolve(SERVE_OPTIONS, {"loop": "uvloop"}, settings(), {})
    assert "uvloop is not installed" in str(raised.value)


@pytest.mark.parametrize(
    "args,env,fragment",
    [
        (["--probe-port", "x"], {}, "--probe-port (from command line --probe-port)"),
        ([], {"HURRICANE_STATIC": "perhaps"}, "--static (from environment HURRICANE_STATIC)"),
        (
            [],
            {"TEST_SETTINGS": json.dumps({"HURRICANE_REQ_QUEUE_LEN": "many"})},
            "--req-queue-len (from setting HURRICANE_REQ_QUEUE_LEN)",
        ),
    ],
)
def test_bad_value_stops_serve_before_anything_listens(tmp_path, args, env, fragment):
    port, result = run_serve(tmp_path, *args, **env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "expected" in lines[0]
    assert not port_open(port) and not port_open(port + 1)
    assert "Serving" not in result.stdout


def test_taken_port_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "manage.py", "serve", "--port", str(busy), "--no-probe"],
            cwd=TEST_PROJECT,
            env=base_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"port {busy} (--port) is already in use" in result.stderr


def test_the_workers_default_follows_the_cores_the_process_may_use():
    """min(32, usable cores + 4): on one core of a two-core machine (a cpuset, as a
    container's), 5 threads, not the host's count + 4."""
    cores = sorted(os.sched_getaffinity(0))
    assert len(cores) >= 2, f"this test needs two CPU cores, this machine gives {cores}"
    script = (
        "from hurricane.config.options import SERVE_OPTIONS; "
        "print([o.default for o in SERVE_OPTIONS if o.name == 'workers'][0])"
    )
    one_core = subprocess.run(
        [sys.executable, "-c", script],
        preexec_fn=lambda: os.sched_setaffinity(0, {cores[0]}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert one_core.stdout.strip() == "5", one_core.stderr
