"""Security defaults (docs/security.md), each as a user meets it:

- the probe/metrics port is not the app port unless asked, and no Service of the
  manifests publishes it;
- a debugger is off unless asked, warns with its port when on, and the production
  overlay makes serve and consume refuse to start with one;
- no secret value reaches the logs: the entrypoint's summary line and the runtime's
  option dump mask values named like secrets and every value read from a _FILE;
- the image installs its dependencies from hash locks that match pyproject.toml.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import (
    ENTRYPOINT,
    ROOT,
    entrypoint_env,
    free_port,
    port_open,
    run_entrypoint,
    run_serve,
    status,
    wait_until,
)
from hurricane.config import masking
from hurricane.config.options import (
    CONSUME_OPTIONS,
    SERVE_OPTIONS,
    OptionError,
    probe_port_of,
    resolve,
)

sys.path.insert(0, str(ROOT / "scripts"))
import check_manifests  # noqa: E402

MANIFESTS = ROOT / "k8s-manifests"
PRODUCTION = MANIFESTS / "overlays" / "production"
DEBUGGER_COMPONENT = MANIFESTS / "components" / "debugger"
NO_SETTINGS = object()


def docs_page(name: str) -> str:
    """The page docs/``name``, its lines joined (a phrase may span two)."""
    return " ".join((ROOT / "docs" / name).read_text().split())


# -- the probe port ---------------------------------------------------------------------


def test_the_probe_port_is_the_app_port_only_when_asked():
    defaults = resolve(SERVE_OPTIONS, {}, NO_SETTINGS, {})
    assert (defaults.port, probe_port_of(defaults)) == (8000, 8001)
    moved = resolve(SERVE_OPTIONS, {"port": "9000"}, NO_SETTINGS, {})
    assert probe_port_of(moved) == 9001
    asked = resolve(SERVE_OPTIONS, {"port": "9000"}, NO_SETTINGS, {"HURRICANE_PROBE_PORT": "9000"})
    assert probe_port_of(asked) == 9000
    assert resolve(CONSUME_OPTIONS, {}, NO_SETTINGS, {}).probe_port == 8001


def test_metrics_and_probes_are_not_on_the_app_port_by_default(serve):
    server = serve()  # --port only: the probes take the next port
    assert server.probe_port == server.port + 1
    assert status(server.probe("/metrics")) == 200
    assert status(server.probe("/ready")) == 200
    assert status(server.url("/metrics")) == 404
    assert status(server.url("/ready")) == 404
    assert requests.get(server.url("/hello/"), timeout=5).status_code == 200


@functools.cache  # kubectl kustomize takes a while; several tests read the same
def rendered_kustomizations() -> dict[str, str]:
    rendered = {
        name: check_manifests.render(path)
        for name, path in check_manifests.kustomizations().items()
    }
    for component in check_manifests.components():
        rendered[f"base+{component.name}"] = check_manifests.render_component(component)
    return rendered


def test_no_service_publishes_the_probe_port():
    """Every Service of every kustomization (and of base with each component) targets
    other container ports than the probe port, which serves /metrics."""
    checked = 0
    for name, text in rendered_kustomizations().items():
        objects = check_manifests.parse(text)
        probe_ports: set[object] = {"probes"}
        for container in check_manifests.containers(objects):
            for port in container.spec.get("ports", []):
                if port.get("name") == "probes":
                    probe_ports.add(port["containerPort"])
            if "HURRICANE_PROBE_PORT" in container.environment:
                probe_ports.add(int(container.environment["HURRICANE_PROBE_PORT"]))
        assert len(probe_ports) > 1, f"{name}: no probe port found"
        for service in (obj for obj in objects if obj["kind"] == "Service"):
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                assert target not in probe_ports, f"{name}: {service['metadata']['name']} {port}"
                checked += 1
    assert checked >= len(check_manifests.kustomizations())


SCRAPE_LABEL = "hurricane.blueshoe.io/scrape-metrics"
ONLY_MONITORING = [{"namespaceSelector": {"matchLabels": {SCRAPE_LABEL: "true"}}}]


def pod_ports(objects: list[dict], policy: dict) -> dict[str, int]:
    """The named container ports of the pods a NetworkPolicy selects."""
    selector = policy["spec"]["podSelector"]
    return {
        name: number
        for container in check_manifests.containers(objects)
        if check_manifests.selects(selector, check_manifests.pod_labels(container.workload))
        for name, number in container.ports().items()
    }


def policy_rules(port: str) -> Iterator[tuple[str, dict]]:
    """(kustomization, ingress rule) for each rule of every rendered NetworkPolicy
    that admits the named container port of a pod it selects."""
    for name, text in rendered_kustomizations().items():
        objects = check_manifests.parse(text)
        for policy in (obj for obj in objects if obj["kind"] == "NetworkPolicy"):
            ports = pod_ports(objects, policy)
            for rule in policy["spec"].get("ingress", []):
                if {port, ports.get(port)} & {entry["port"] for entry in rule["ports"]}:
                    yield name, rule


def test_network_policies_admit_the_probe_port_from_monitoring_namespaces_only():
    """/metrics and the probes: from the namespaces labelled for scraping (the node's
    kubelet needs no rule), never from every pod."""
    rules = list(policy_rules("probes"))
    assert len(rules) >= 5  # web in every kustomization, the consumer
    for name, rule in rules:
        assert rule.get("from") == ONLY_MONITORING, f"{name}: {rule}"


def test_no_network_policy_admits_the_debugger_port():
    """debugpy runs any code sent to it: the development overlay declares its port,
    and no rule admits it (kubectl port-forward needs none)."""
    development = check_manifests.parse(rendered_kustomizations()["overlays/development"])
    assert any(c.has_port("debugger") for c in check_manifests.containers(development))
    assert list(policy_rules("debugger")) == []


def test_every_pod_is_spared_service_links():
    """Service links would put <SVC>_PORT=tcp://... (HURRICANE_PORT for a Service
    named hurricane) and <SVC>_SERVICE_PORT_FILE into Hurricane's environment."""
    pods = 0
    for name, text in rendered_kustomizations().items():
        for obj in check_manifests.parse(text):
            if obj["kind"] in check_manifests.WORKLOAD_KINDS:
                spec = obj["spec"]["template"]["spec"]
                assert spec.get("enableServiceLinks") is False, f"{name}: {obj['metadata']}"
                pods += 1
    assert pods >= 10


def test_the_docs_warn_not_to_expose_the_probe_port():
    section = docs_page("security.md")
    assert "Never expose the probe port" in section
    assert "/metrics" in section and "PodMonitor" in section
    kubernetes = docs_page("kubernetes.md")
    assert f"kubectl label namespace monitoring {SCRAPE_LABEL}=true" in kubernetes


# -- the debugger ---------------------------------------------------------------------------


def test_the_debugger_is_off_unless_asked():
    options = resolve(SERVE_OPTIONS, {}, NO_SETTINGS, {})
    assert options.debugger is False and options.pycharm_host is None
    assert options.forbid_debugger is False


def test_the_debugger_warns_with_its_port(serve):
    debugger_port = free_port()
    server = serve("--debugger", "--debugger-port", str(debugger_port))
    assert port_open(debugger_port)
    warning = next(
        (line for line in server.output.splitlines() if "WARNING hurricane.debugging" in line),
        None,
    )
    assert warning is not None, server.output
    assert f"debugpy listens on port {debugger_port} of every interface" in warning
    assert "never enable it in production" in warning


REFUSAL = (
    "CommandError: refusing to start: {flag} (from {source}) asks for a debugger, which "
    "--forbid-debugger (from environment HURRICANE_FORBID_DEBUGGER) forbids here; a "
    "debugger must never run in production\n"
)


@pytest.mark.parametrize(
    ("args", "env", "flag", "source"),
    [
        (["--debugger"], {}, "--debugger", "command line --debugger"),
        ([], {"HURRICANE_DEBUGGER": "true"}, "--debugger", "environment HURRICANE_DEBUGGER"),
        (
            [],
            {"HURRICANE_PYCHARM_HOST": "127.0.0.1", "HURRICANE_PYCHARM_PORT": "9"},
            "--pycharm-host",
            "environment HURRICANE_PYCHARM_HOST",
        ),
    ],
)
def test_forbid_debugger_refuses_to_serve_with_one(tmp_path, args, env, flag, source):
    debugger_port = free_port()
    port, result = run_serve(
        tmp_path,
        "--debugger-port",
        str(debugger_port),
        *args,
        HURRICANE_FORBID_DEBUGGER="true",
        **env,
    )
    assert result.returncode == 1
    assert result.stderr == REFUSAL.format(flag=flag, source=source), result.stderr
    assert result.stdout == ""
    assert not port_open(port) and not port_open(port + 1) and not port_open(debugger_port)


@pytest.mark.parametrize(
    ("setting", "environment", "source"),
    [
        (False, "true", "environment HURRICANE_FORBID_DEBUGGER"),
        (True, "false", "setting HURRICANE_FORBID_DEBUGGER"),
    ],
)
def test_forbid_debugger_wins_from_any_source(tmp_path, setting, environment, source):
    """A project's setting HURRICANE_FORBID_DEBUGGER = False does not undo the
    container's HURRICANE_FORBID_DEBUGGER=true (nor the reverse): any source that
    forbids the debugger forbids it."""
    (tmp_path / "forbid_settings.py").write_text(
        f"from testproject.settings import *  # noqa\nHURRICANE_FORBID_DEBUGGER = {setting}\n"
    )
    debugger_port = free_port()
    port, result = run_serve(
        tmp_path,
        "--debugger",
        "--debugger-port",
        str(debugger_port),
        DJANGO_SETTINGS_MODULE="forbid_settings",
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        HURRICANE_FORBID_DEBUGGER=environment,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == REFUSAL.replace("environment HURRICANE_FORBID_DEBUGGER", source).format(
        flag="--debugger", source="command line --debugger"
    )
    assert not port_open(port) and not port_open(port + 1) and not port_open(debugger_port)


def test_a_bad_forbid_debugger_value_is_an_error_whichever_source_wins():
    """Every source of the switch is read, so a bad one is reported, not skipped."""
    settings = SimpleNamespace(HURRICANE_FORBID_DEBUGGER=False)
    environ = {"HURRICANE_FORBID_DEBUGGER": "ture"}
    with pytest.raises(OptionError) as raised:
        resolve(SERVE_OPTIONS, {}, settings, environ)
    assert str(raised.value) == (
        "invalid value 'ture' for --forbid-debugger (from environment "
        "HURRICANE_FORBID_DEBUGGER): expected a boolean (true/false, 1/0, yes/no)"
    )
    assert resolve(SERVE_OPTIONS, {}, settings, {}).forbid_debugger is False


def test_forbid_debugger_refuses_to_consume_with_one(tmp_path):
    """Before the broker is reached (nothing listens where it is said to be)."""
    env = entrypoint_env(
        tmp_path,
        HURRICANE_DEBUGGER="1",
        HURRICANE_FORBID_DEBUGGER="yes",
        AMQP_HOST="127.0.0.1",
        AMQP_PORT=str(free_port()),
    )
    result = run_entrypoint(
        ["consume", "notes.consumers.NoteHandler", "--queue", "q", "--exchange", "x"], env, tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] + "\n" == REFUSAL.format(
        flag="--debugger", source="environment HURRICANE_DEBUGGER"
    )


def production_web(with_debugger: bool) -> check_manifests.Container:
    if with_debugger:  # the way a user would turn it on: the component on the overlay
        text = check_manifests.render_component(DEBUGGER_COMPONENT, onto=PRODUCTION)
    else:
        text = check_manifests.render(PRODUCTION)
    for container in check_manifests.containers(check_manifests.parse(text)):
        if check_manifests.describe(container.workload) == "Deployment/hurricane-web":
            return container
    raise AssertionError("no Deployment/hurricane-web in the production overlay")


def test_the_production_overlay_forbids_the_debugger():
    """On each serve and consume container itself (its `env`, which wins over the
    ConfigMaps any component or overlay merges into)."""
    objects = check_manifests.parse(check_manifests.render(PRODUCTION))
    commands = []
    for container in check_manifests.containers(objects):
        if container.spec["args"][0] in ("serve", "consume"):
            commands.append(container.spec["args"][0])
            assert {"name": "HURRICANE_FORBID_DEBUGGER", "value": "true"} in container.spec["env"]
    assert sorted(commands) == ["consume", "serve"]


def test_the_debugger_component_on_the_production_overlay_stops_the_pod(tmp_path):
    """What the pod would do: the rendered web container's environment, run through
    the entrypoint here (with this machine's ports, the demo's settings and a secret
    file where the cluster would mount one), refuses to start."""
    web = production_web(with_debugger=True)
    assert web.environment["HURRICANE_DEBUGGER"] == "true"
    secret = tmp_path / "django-secret-key"
    secret.write_text("not-a-real-key")
    port, probe_port, debugger_port = free_port(), free_port(), free_port()
    environment = {
        **web.environment,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DJANGO_SECRET_KEY_FILE": str(secret),
        "HURRICANE_PORT": str(port),
        "HURRICANE_PROBE_PORT": str(probe_port),
        "HURRICANE_DEBUGGER_PORT": str(debugger_port),
    }
    result = run_entrypoint(web.spec["args"], entrypoint_env(tmp_path, **environment), tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] + "\n" == REFUSAL.format(
        flag="--debugger", source="environment HURRICANE_DEBUGGER"
    )
    assert not any(port_open(p) for p in (port, probe_port, debugger_port))
    # And the manifests' check says so before anything is applied.
    problems = check_manifests.check_rendered(
        check_manifests.render_component(DEBUGGER_COMPONENT, onto=PRODUCTION), production=True
    )
    assert any("a debugger in production" in problem for problem in problems), problems


# -- secrets in logs ------------------------------------------------------------------------


def load_entrypoint():
    loader = importlib.machinery.SourceFileLoader("hurricane_entrypoint", str(ENTRYPOINT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


# (name, value, names read from files, shown)
MASKING_CASES = [
    ("HURRICANE_WEBHOOK_SECRET", "hunter2", set(), "*****"),
    ("AMQP_PASSWORD", "hunter2", set(), "*****"),
    ("DJANGO_SECRET_KEY", "hunter2", set(), "*****"),
    ("GITHUB_TOKEN", "hunter2", set(), "*****"),
    ("db_password", "hunter2", set(), "*****"),
    # Secrets that do not say PASSWORD, SECRET, TOKEN or KEY.
    ("AMQP_PASS", "hunter2", set(), "*****"),
    ("AMQP_PWD", "hunter2", set(), "*****"),
    ("DB_PASSWD", "hunter2", set(), "*****"),
    ("SMTP_CREDENTIALS", "user:hunter2", set(), "*****"),
    ("amqp-pass", "hunter2", set(), "*****"),
    # PASS and PWD only as words of their own.
    ("BYPASS_CACHE", "true", set(), "true"),
    ("PASSTHROUGH_HOSTS", "a,b", set(), "a,b"),
    ("HURRICANE_PORT", "8000", set(), "8000"),
    ("HURRICANE_WEBHOOK_URL", "https://hooks/abc", {"HURRICANE_WEBHOOK_URL"}, "*****"),
    ("HURRICANE_PORT", "8000", {"HURRICANE_WEBHOOK_URL"}, "8000"),
    ("AMQP_PASSWORD", "", set(), ""),
    # A URL shows its host and its path's public words: Slack, Discord and Teams
    # webhooks carry their credential in the path, others in the user part or the query.
    (
        "HURRICANE_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/xoxsecret",
        set(),
        "https://hooks.slack.com/services/*****/*****/*****",
    ),
    (
        "HURRICANE_WEBHOOK_URL",
        "https://discord.com/api/webhooks/123/tok",
        set(),
        "https://discord.com/api/webhooks/*****/*****",
    ),
    (
        "HURRICANE_WEBHOOK_URL",
        "https://acme.webhook.office.com/webhookb2/a-1@b-2/IncomingWebhook/f0e1/c-3",
        set(),
        "https://acme.webhook.office.com/webhookb2/*****/IncomingWebhook/*****/*****",
    ),
    (
        "HURRICANE_WEBHOOK_URL",
        "https://hook-user:pw@hooks.example:8443/abc?token=t#x",
        set(),
        "https://*****@hooks.example:8443/*****?*****",
    ),
    ("HURRICANE_WEBHOOK_URL", "https://u:pw@hooks.example", set(), "https://*****@hooks.example"),
    ("HURRICANE_WEBHOOK_URL", "https://hooks.example/", set(), "https://hooks.example/"),
    ("HURRICANE_WEBHOOK_URL", "http://127.0.0.1:8080", set(), "http://127.0.0.1:8080"),
    # 1.6's own receiver path stays as 1.6 logged it; a word of the user's own does not.
    (
        "HURRICANE_WEBHOOK_URL",
        "http://localhost:8074/webhook",
        set(),
        "http://localhost:8074/webhook",
    ),
    (
        "HURRICANE_WEBHOOK_URL",
        "https://ci.example/Hooks/deploys/",
        set(),
        "https://ci.example/Hooks/*****/",
    ),
    (
        "HURRICANE_WEBHOOK_URL",
        "https://ci.example/webhook#frag",
        set(),
        "https://ci.example/webhook#*****",
    ),
    ("DATABASE_URL", "postgres://app:pw@db/app", set(), "postgres://*****@db/*****"),
    (
        "HURRICANE_COMMANDS",
        "notify --to 'http://u:pw@h/x'",
        set(),
        "notify --to 'http://*****@h/*****'",
    ),
    ("HURRICANE_WEBHOOK_URL", "http://[::1]:99999/x", set(), "http://[::1]:99999/*****"),
    ("HURRICANE_WEBHOOK_URL", "not a url", set(), "not a url"),
]


@pytest.mark.parametrize(("name", "value", "from_files", "shown"), MASKING_CASES)
def test_the_entrypoint_and_the_runtime_mask_by_the_same_rule(name, value, from_files, shown):
    entrypoint = load_entrypoint()
    assert entrypoint.shown_value(name, value, from_files) == shown
    assert masking.shown_value(name, value, from_files) == shown


def test_the_entrypoint_and_the_runtime_share_the_rule_s_words():
    entrypoint = load_entrypoint()
    assert entrypoint.SECRET_WORDS == masking.SECRET_WORDS
    assert entrypoint.SECRET_NAME_WORDS == masking.SECRET_NAME_WORDS
    assert entrypoint.MASK == masking.MASK
    assert entrypoint.FROM_FILES_VARIABLE == masking.FROM_FILES_VARIABLE
    assert entrypoint.PUBLIC_PATH_WORDS == masking.PUBLIC_PATH_WORDS


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.slack.com/services/T0/B0/xoxsecret",
            "https://hooks.slack.com/services/*****/*****/*****",
        ),
        (
            "https://user:pw@outlook.office.com:443/webhook/x?y=z",
            "https://*****@outlook.office.com:443/webhook/*****?*****",
        ),
        ("http://[::1]:8080", "http://[::1]:8080"),
        (" https://hooks.example/x ", "https://hooks.example/*****"),
        ("https://hooks.example/api/v1/events/", "https://hooks.example/api/v1/events/"),
        ("https://hooks.example//x%2Fy;p=1", "https://hooks.example//*****"),
        ("not a url", "*****"),
    ],
)
def test_a_url_shows_its_host_and_its_path_s_public_words(url, shown):
    """What a log line may say of where a webhook goes (the same in both copies)."""
    assert masking.public_url(url) == shown
    assert load_entrypoint().public_url(url) == shown


def test_the_security_page_lists_the_public_path_words():
    text = " ".join((ROOT / "docs" / "security.md").read_text().split())
    listed = re.search(r"The words, compared regardless of case: (.*?)\. Slack", text)
    assert listed, "docs/security.md lists no public path words"
    assert re.findall(r"`([^`]+)`", listed[1]) == sorted(masking.PUBLIC_PATH_WORDS)


def test_no_secret_reaches_the_summary_or_the_option_dump(start, tmp_path):
    """serve --debug logs every option it was given; through the entrypoint, a secret
    named so, a value read from a _FILE and a broker password are masked in the
    summary and in that dump, and none of them appears anywhere in the output."""
    secrets = {
        "webhook secret": "hunter-webhook-7f3a",
        "allowed proxies": "10.203.45.67/32",
        "broker password": "hunter-amqp-91c2",
        "command-line secret": "hunter-cli-44d1",
    }
    webhook_file = tmp_path / "webhook-secret"
    webhook_file.write_text(secrets["webhook secret"] + "\n")
    proxies_file = tmp_path / "allowed-proxies"
    proxies_file.write_text(secrets["allowed proxies"])
    port, probe_port = free_port(), free_port()
    env = entrypoint_env(
        tmp_path,
        HURRICANE_PROBE_PORT=str(probe_port),
        HURRICANE_COMMANDS="migrate",
        HURRICANE_DEBUG="true",
        HURRICANE_WEBHOOK_SECRET_FILE=str(webhook_file),
        HURRICANE_FORWARDED_ALLOW_IPS_FILE=str(proxies_file),
        AMQP_PASSWORD=secrets["broker password"],
    )
    args = ["serve", "--port", str(port), "--webhook-secret", secrets["command-line secret"]]
    server = start(args, env)
    server.wait_for(lambda: status(f"http://127.0.0.1:{probe_port}/startup") == 200, "startup")
    assert server.terminate() == 0
    output = server.output

    summary = next(line for line in output.splitlines() if "hurricane-entrypoint: running" in line)
    assert "--webhook-secret *****" in summary
    for shown in ("HURRICANE_WEBHOOK_SECRET", "HURRICANE_FORWARDED_ALLOW_IPS", "AMQP_PASSWORD"):
        assert f"{shown}=*****" in summary, summary
    dump = [line for line in output.splitlines() if " Option " in line]
    assert any("Option debug = True (from environment HURRICANE_DEBUG)" in line for line in dump)
    assert any(
        "Option webhook_secret = '*****' (from command line --webhook-secret)" in line
        for line in dump
    ), dump
    assert any(
        "Option forwarded_allow_ips = '*****' (from environment HURRICANE_FORWARDED_ALLOW_IPS)"
        in line
        for line in dump
    ), dump
    for what, secret in secrets.items():
        assert secret not in output, f"the {what} is in the output"


def test_commands_read_from_a_file_are_not_shown(tmp_path, webhook_receiver):
    """HURRICANE_COMMANDS_FILE: the log names each command by its place in the file,
    and a failing one's error and traceback, in the log and in the failure webhook,
    show neither the command nor a word of it."""
    commands = tmp_path / "commands"
    commands.write_text(
        "shell --command 'greeting = \"s3cr3t-first\"'\ns3cr3t-pw --password=s3cr3t-arg\n"
    )
    port = free_port()
    env = entrypoint_env(
        tmp_path,
        HURRICANE_COMMANDS_FILE=str(commands),
        HURRICANE_PORT=str(port),
        HURRICANE_WEBHOOK_URL=webhook_receiver.url,
        HURRICANE_LOG_LEVEL="DEBUG",
    )
    result = run_entrypoint(["serve"], env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    first, second = (f"(command {n} of HURRICANE_COMMANDS_FILE)" for n in (1, 2))
    assert f"Running management command: ***** {first}" in output
    assert f"Management command done: ***** {first}" in output
    assert f"Running management command: ***** {second}" in output
    assert (
        f"Start-up failed: management command ***** {second} failed: "
        "CommandError(\"Unknown command: '*****'\")"
    ) in output
    # Where it failed is still there: the traceback's frames, down to Django's.
    assert "Traceback (most recent call last)" in output
    assert "django/core/management/__init__.py" in output
    assert "Option command = '*****' (from environment HURRICANE_COMMANDS)" in output
    assert "s3cr3t" not in output
    failure = webhook_receiver.wait_for(lambda hook: hook.get("type") == "startup")
    assert failure["status"] == "failed", failure
    assert "Unknown command: '*****'" in json.dumps(failure)
    assert "s3cr3t" not in json.dumps(webhook_receiver.received)


def test_the_broker_read_from_files_is_not_shown(tmp_path):
    """The consumer's lines name the broker and the user: from files, as a secret."""
    (tmp_path / "host").write_text("localhost")
    (tmp_path / "user").write_text("s3cr3t-user")
    env = entrypoint_env(
        tmp_path,
        AMQP_HOST_FILE=str(tmp_path / "host"),
        AMQP_USER_FILE=str(tmp_path / "user"),
        AMQP_PASSWORD="wrong",
        HURRICANE_QUEUE="notes",
        HURRICANE_EXCHANGE="demo",
        HURRICANE_PROBE_PORT=str(free_port()),
    )
    result = run_entrypoint(["consume", "notes.consumers.NoteHandler"], env, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Connecting to *****:5672/" in output, output
    assert "the broker at *****:5672/ refused the credentials of user '*****'" in output
    assert "s3cr3t" not in output and "localhost" not in output, output


def test_a_webhook_url_read_from_a_file_is_not_shown(tmp_path, start, webhook_receiver):
    """Where the webhooks go is named by its host and public path words, and not at
    all when the URL came from a file."""
    (tmp_path / "webhook-url").write_text(webhook_receiver.url)
    port = free_port()
    env = entrypoint_env(
        tmp_path, HURRICANE_WEBHOOK_URL_FILE=str(tmp_path / "webhook-url"), HURRICANE_PORT=str(port)
    )
    running = start(["serve"], env)
    running.wait_for(lambda: "Webhook startup sent to" in running.output, "the webhook log line")
    assert "Webhook startup sent to *****" in running.output, running.output
    origin = webhook_receiver.url.removesuffix("/hook")
    assert origin not in running.output, running.output


def test_the_summary_masks_shortened_secret_flags_which_serve_then_refuses(tmp_path):
    """Django's parser would take --amqp-pass for --amqp-password; Hurricane's commands
    refuse shortened flags, and the entrypoint's summary, printed before they can,
    masks what looks like one. A misspelt flag's value is not echoed either."""
    entrypoint = load_entrypoint()
    shown = entrypoint.shown_command(
        ["serve", "--amqp-pass", "pw1", "--webhook-sec=pw2", "--seconds", "3", "--key", "pw3"]
    )
    assert shown == "serve --amqp-pass ***** --webhook-sec=***** --seconds 3 --key *****"

    for args, flag in [
        (["--amqp-pass", "hunter-pw-5e1"], "--amqp-pass"),
        (["--webhook-secre", "hunter-pw-5e1"], "--webhook-secre"),
        (["--webhook-secrett=hunter-pw-5e1"], "--webhook-secrett"),
    ]:
        _, result = run_serve(tmp_path, *args)
        assert result.returncode == 2, result.stderr
        assert f"error: unrecognized arguments: {flag} (values not shown)" in result.stderr
        assert "hunter-pw-5e1" not in result.stdout + result.stderr
    _, result = run_serve(tmp_path, "--amqp-passwort", "hunter-pw-5e1", HURRICANE_LOG_FORMAT="json")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert json.loads(line)["message"] == (
        "manage.py serve: unrecognized arguments: --amqp-passwort (values not shown)"
    )


def test_a_webhook_url_with_a_port_that_cannot_be_is_a_bad_value(tmp_path):
    for url in ("http://u:hunter-pw-6d2@127.0.0.1:99999/hook", "http://127.0.0.1:8x/hook"):
        _, result = run_serve(tmp_path, "--webhook-url", url)
        assert result.returncode == 1
        [line] = result.stderr.splitlines()
        assert line.startswith("CommandError: invalid value 'http://"), line
        assert "expected an http:// or https:// URL with a port between 1 and 65535" in line
        assert "hunter-pw-6d2" not in result.stderr


def test_a_bad_value_read_from_a_file_is_not_shown(tmp_path):
    proxies_file = tmp_path / "allowed-proxies"
    proxies_file.write_text("not-an-address-zq9")
    result = run_entrypoint(
        ["serve"],
        entrypoint_env(tmp_path, HURRICANE_FORWARDED_ALLOW_IPS_FILE=str(proxies_file)),
        tmp_path,
    )
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith(
        "CommandError: invalid value '*****' for --forwarded-allow-ips "
        "(from environment HURRICANE_FORWARDED_ALLOW_IPS): expected "
    ), result.stderr
    assert "not-an-address-zq9" not in result.stdout + result.stderr


# -- the image's dependencies -----------------------------------------------------------------

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
LOCK_SCRIPT = (ROOT / "image" / "lock-requirements.sh").read_text()
BAKE_PYTHONS = re.findall(
    r'"(3\.\d+)"',
    re.search(r"matrix\s*=\s*\{\s*py\s*=\s*\[(.*?)\]", (ROOT / "docker-bake.hcl").read_text())[1],
)
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


def read_lock(path: Path) -> list[tuple[Requirement, list[str]]]:
    """(the pinned requirement, its hashes) for each entry of a pip requirements file
    in the form pip-compile and uv write."""
    entries = []
    logical = " ".join(
        line.split("#", 1)[0].strip().removesuffix("\\").strip()
        if not line.lstrip().startswith("--hash")
        else line.strip().removesuffix("\\").strip()
        for line in path.read_text().splitlines()
    )
    for chunk in re.split(r"\s(?=[A-Za-z0-9][A-Za-z0-9._-]*==)", " " + logical):
        if not chunk.strip():
            continue
        hashes = re.findall(r"--hash=(\S+)", chunk)
        requirement = Requirement(re.sub(r"\s*--hash=\S+", "", chunk).strip())
        entries.append((requirement, hashes))
    return entries


def environments():
    for python in BAKE_PYTHONS:
        for platform, machine in PLATFORMS.items():
            yield (
                f"py{python} {platform}",
                {
                    "python_version": python,
                    "python_full_version": f"{python}.0",
                    "sys_platform": "linux",
                    "platform_system": "Linux",
                    "platform_machine": machine,
                    "os_name": "posix",
                    "implementation_name": "cpython",
                    "platform_python_implementation": "CPython",
                    "extra": "",
                },
            )


def pins_for(entries, environment: dict) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for requirement, _ in entries:
        if requirement.marker is None or requirement.marker.evaluate(environment):
            name = canonicalize_name(requirement.name)
            assert name not in pins, f"{name} pinned twice for {environment['python_version']}"
            (specifier,) = requirement.specifier
            pins[name] = Version(specifier.version)
    return pins


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        # the runtime, and debugpy: the base image bundles it (HURRICANE_DEBUGGER=true)
        (
            "requirements.lock",
            PYPROJECT["project"]["dependencies"]
            + PYPROJECT["project"]["optional-dependencies"]["debug"],
        ),
        ("build-requirements.lock", PYPROJECT["build-system"]["requires"]),
    ],
)
def test_the_locks_pin_every_dependency_with_hashes_for_every_image(lock, requirements):
    entries = read_lock(ROOT / "image" / lock)
    assert entries
    for requirement, hashes in entries:
        assert [spec.operator for spec in requirement.specifier] == ["=="], requirement
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), requirement
    for where, environment in environments():
        pins = pins_for(entries, environment)
        for line in requirements:
            wanted = Requirement(line)
            if wanted.marker is not None and not wanted.marker.evaluate(environment):
                continue
            name = canonicalize_name(wanted.name)
            assert name in pins, f"{lock} has no {name} for {where}"
            assert wanted.specifier.contains(pins[name], prereleases=True), (
                f"{lock} pins {name}=={pins[name]}, outside {wanted.specifier} ({where})"
            )


def test_the_locks_are_made_for_the_oldest_python_the_images_have():
    floor = re.search(r"^PYTHON_FLOOR=(\S+)$", LOCK_SCRIPT, re.M)[1]
    assert floor == min(BAKE_PYTHONS, key=Version)
    assert PYPROJECT["project"]["requires-python"] == f">={floor}"


def test_the_dockerfile_installs_only_what_the_locks_pin():
    # One line per instruction, comments left out.
    instructions = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    run_lines = "\n".join(instructions).replace("\\\n", " ")
    assert re.search(
        r"^COPY image/requirements\.lock image/build-requirements\.lock", DOCKERFILE, re.M
    )
    pip_installs = [args.strip() for args in re.findall(r"pip\"? install ([^;&\n]*)", run_lines)]
    assert len(pip_installs) == 3, pip_installs
    from_locks = [args for args in pip_installs if " -r " in f" {args}"]
    assert sorted(args.split()[-1] for args in from_locks) == [
        "image/build-requirements.lock",
        "image/requirements.lock",
    ]
    for args in pip_installs:
        assert "--no-deps" in args.split(), args
    for args in from_locks:
        assert "--require-hashes" in args.split(), args
    (hurricane,) = [args for args in pip_installs if args not in from_locks]
    assert "--no-index" in hurricane.split() and "/wheels/django_hurricane-" in hurricane
    assert 'pip" check' in run_lines
    assert "!image/requirements.lock" in (ROOT / ".dockerignore").read_text().splitlines()


def test_webhook_url_credentials_stay_out_of_the_log(serve, webhook_receiver):
    """A receiver's token in the URL's path (Slack, Discord, Teams), query or user part
    is never logged: the option dump and the webhook lines show the host and the
    path's public words."""
    origin = webhook_receiver.url.removesuffix("/hook")
    host = origin.removeprefix("http://")
    url = f"http://hook-user:pw-s3cr3t@{host}/services/T0-s3cr3t/B0-s3cr3t?token=tok-s3cr3t"
    # At DEBUG, the option dump shows the URL too.
    server = serve("--webhook-url", url, "--log-level", "DEBUG")
    webhook_receiver.wait_for(lambda hook: hook.get("type") == "startup")
    wait_until(lambda: "Webhook startup sent to" in server.output, what="the webhook log line")
    shown = f"http://*****@{host}/services/*****/*****?*****"
    assert f"Option webhook_url = '{shown}'" in server.output
    assert re.search(rf"Webhook startup sent to {re.escape(shown)}$", server.output, re.M)
    assert "s3cr3t" not in server.output


def test_the_entrypoint_and_serve_read_the_same_dry_run_words():
    """HURRICANE_DRY_RUN is read twice, by the entrypoint (which cannot import
    Hurricane) and by serve/consume (hurricane.config.plan): a word one takes and the
    other refuses would start a pod, or refuse one, behind the user's back."""
    from hurricane.config.plan import FALSE_WORDS, TRUE_WORDS, DryRunError, dry_run_requested

    words = load_entrypoint().DRY_RUN_WORDS
    assert {word for word, wanted in words.items() if wanted} == set(TRUE_WORDS)
    assert {word for word, wanted in words.items() if not wanted} == set(FALSE_WORDS)
    for word in (*TRUE_WORDS, *FALSE_WORDS):
        variable = {"HURRICANE_DRY_RUN": f" {word.upper()} "}
        assert dry_run_requested(variable) is words[word]
    with pytest.raises(DryRunError):
        dry_run_requested({"HURRICANE_DRY_RUN": "maybe"})
