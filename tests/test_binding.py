"""Where the servers listen: ``--app-interface`` (the app server and debugpy) and
``--interface`` (the probe server, for serve and consume), observed with real
connections: accepted where an option says, refused everywhere else. And a port
that is taken, a name that does not resolve or an address that is not here: one
line and a non-zero exit."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import ROOT, TEST_PROJECT, base_env, consumer_args, free_port, port_open, run_serve
from hurricane.config.options import SERVE_OPTIONS, OptionError, resolve

# In the documentation range TEST-NET-3: an address no machine here has.
FOREIGN_ADDRESS = "203.0.113.9"


@pytest.fixture(scope="module")
def outside_ip() -> str:
    """An IPv4 address of this machine that is not loopback: what another host (the
    kubelet, a neighbour on the LAN) connects to."""
    candidates = []
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    with contextlib.suppress(OSError):
        listing = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10
        ).stdout
        candidates += re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", listing)
    for candidate in candidates:
        if not ipaddress.ip_address(candidate).is_loopback:
            return candidate
    raise AssertionError(
        "this machine has no non-loopback IPv4 address (tried the host name and "
        f"`ip -4 addr`: {candidates}); loopback-only binds cannot be told apart"
    )


def url(host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"


def get(host: str, port: int, path: str) -> int:
    return requests.get(url(host, port, path), timeout=10).status_code


def accepts(host: str, port: int) -> bool:
    """True when a connection to host:port is accepted, False when it is refused;
    anything else (a timeout, an unreachable network) fails the test."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except ConnectionRefusedError:
        return False


def started_at(process, host: str, port: int) -> None:
    process.wait_for(
        lambda: get(host, port, "/startup") == 200,
        30,
        f"the startup probe on {url(host, port, '/startup')} to answer 200",
    )


def stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# -- the options --------------------------------------------------------------------------


def test_interface_values_are_parsed_once():
    options = resolve(
        SERVE_OPTIONS,
        {"app_interface": "[::1]"},
        type("Settings", (), {"HURRICANE_INTERFACE": " * "}),
        {},
    )
    assert options.app_interface == "::1"
    assert options.interface is None  # "*": every interface, as by default
    assert resolve(SERVE_OPTIONS, {}, object(), {"HURRICANE_INTERFACE": "::"}).interface == "::"
    for bad in ("", "127.0.0.1:8000", "host name", "[example.com]", "http://x"):
        with pytest.raises(OptionError, match="expected a host name or IP address"):
            resolve(SERVE_OPTIONS, {}, object(), {"HURRICANE_APP_INTERFACE": bad})


@pytest.mark.parametrize(
    "app_source,probe_source", [("cli", "env"), ("setting", "cli"), ("env", "setting")]
)
def test_each_interface_option_from_each_source(serve, outside_ip, app_source, probe_source):
    # The app on loopback only, the probes on the outside address only: each server
    # is reached where its own option says, and refused elsewhere.
    args: list[str] = []
    env: dict[str, str] = {}
    settings: dict[str, str] = {}

    def give(source: str, name: str, value: str) -> None:
        if source == "cli":
            args.extend(["--" + name.replace("_", "-"), value])
        elif source == "env":
            env["HURRICANE_" + name.upper()] = value
        else:
            settings["HURRICANE_" + name.upper()] = value

    give(app_source, "app_interface", "127.0.0.1")
    give(probe_source, "interface", outside_ip)
    env["TEST_SETTINGS"] = json.dumps(settings)
    server = serve(*args, env=env, wait=False)
    started_at(server, outside_ip, server.probe_port)

    assert get("127.0.0.1", server.port, "/hello/") == 200
    assert not accepts(outside_ip, server.port)
    assert not accepts("::1", server.port)
    assert not accepts("127.0.0.1", server.probe_port)
    assert not accepts("::1", server.probe_port)
    assert (
        f"http://127.0.0.1:{server.port}; probes: http://{outside_ip}:{server.probe_port}"
        in server.output
    )


# -- families -----------------------------------------------------------------------------


@pytest.mark.parametrize("processes", ["1", "2"])
def test_default_is_every_interface_of_both_families(serve, outside_ip, processes):
    # What a pod needs: the kubelet reaches the probes on the pod IP. With --processes,
    # every serving process accepts on the IPv4 and the IPv6 socket alike.
    server = serve("--processes", processes)
    for host in ("127.0.0.1", "::1", outside_ip):
        assert get(host, server.port, "/hello/") == 200, host
        assert get(host, server.probe_port, "/alive") == 200, host
    port, probe_port = server.port, server.probe_port
    assert (
        f"http://0.0.0.0:{port}, http://[::]:{port}; "
        f"probes: http://0.0.0.0:{probe_port}, http://[::]:{probe_port}"
    ) in server.output
    assert "(::1)" in server.output  # the IPv6 request reached Django as IPv6


def test_ipv6_loopback_only(serve, outside_ip):
    server = serve("--app-interface", "::1", "--interface", "[::1]", wait=False)
    started_at(server, "::1", server.probe_port)
    assert get("::1", server.port, "/hello/") == 200
    for host in ("127.0.0.1", outside_ip):
        assert not accepts(host, server.port), host
        assert not accepts(host, server.probe_port), host
    assert f"http://[::1]:{server.port}; probes: http://[::1]:{server.probe_port}" in server.output


def test_any_ipv6_address_is_one_dual_stack_socket(serve, outside_ip):
    server = serve("--app-interface", "::", "--interface", "::")
    for host in ("::1", "127.0.0.1", outside_ip):
        assert get(host, server.port, "/hello/") == 200, host
        assert get(host, server.probe_port, "/alive") == 200, host
    # One socket, not one per family; IPv4 clients arrive as IPv4-mapped addresses.
    assert f"): http://[::]:{server.port}; probes: http://[::]:{server.probe_port}" in server.output
    assert "(::ffff:127.0.0.1)" in server.output


# Stands in for a hosts file or DNS entry (this machine's /etc/hosts is not ours to
# change): getaddrinfo answers the names in TEST_RESOLVE with the addresses listed.
RESOLVER_SHIM = """
import json, os, socket

_names = json.loads(os.environ.get("TEST_RESOLVE", "{}"))
_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if host not in _names:
        return _getaddrinfo(host, port, family, type, proto, flags)
    found = []
    for address in _names[host]:
        found += _getaddrinfo(address, port, family, type, proto, flags | socket.AI_NUMERICHOST)
    return found


socket.getaddrinfo = getaddrinfo
"""


def test_a_host_name_binds_every_address_it_resolves_to(serve, tmp_path, outside_ip):
    shim = tmp_path / "resolver"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(RESOLVER_SHIM)
    names = {
        "both.hurricane.test": ["127.0.0.1", "::1"],
        # One address here, one not: the one here binds, the other is skipped aloud.
        "partly.hurricane.test": ["127.0.0.1", FOREIGN_ADDRESS],
    }
    env = {"PYTHONPATH": f"{shim}:{ROOT}", "TEST_RESOLVE": json.dumps(names)}
    server = serve(
        "--app-interface", "both.hurricane.test", "--interface", "partly.hurricane.test", env=env
    )
    assert get("127.0.0.1", server.port, "/hello/") == 200
    assert get("::1", server.port, "/hello/") == 200
    assert not accepts(outside_ip, server.port)
    assert get("127.0.0.1", server.probe_port, "/alive") == 200
    assert not accepts("::1", server.probe_port)
    assert not accepts(outside_ip, server.probe_port)
    assert f"http://127.0.0.1:{server.port}, http://[::1]:{server.port}; probes:" in server.output
    assert (
        f"Not listening on {FOREIGN_ADDRESS} (--interface, from command line --interface, "
        "from 'partly.hurricane.test')"
    ) in server.output


def test_debugger_listens_where_the_app_does(serve, outside_ip):
    debugger_port = free_port()
    server = serve(
        "--debugger",
        "--debugger-port",
        str(debugger_port),
        env={"HURRICANE_APP_INTERFACE": "127.0.0.1"},
    )
    assert accepts("127.0.0.1", debugger_port)
    assert not accepts(outside_ip, debugger_port)
    assert f"debugpy listens on port {debugger_port} of 127.0.0.1" in server.output


def test_consume_probes_on_the_interface(consume, broker, outside_ip):
    names = broker.names()
    process = consume(
        *consumer_args(names),
        env={"HURRICANE_INTERFACE": outside_ip},
        wait=False,
    )
    started_at(process, outside_ip, process.probe_port)
    assert not accepts("127.0.0.1", process.probe_port)
    assert f": http://{outside_ip}:{process.probe_port}" in process.output


# -- one line and a non-zero exit ---------------------------------------------------------


@contextlib.contextmanager
def taken_port():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    "args,option",
    [
        (["--no-probe"], "--port"),
        (["--probe-port", "{busy}"], "--probe-port"),
        (["--debugger", "--debugger-port", "{busy}"], "--debugger-port"),
    ],
)
def test_taken_port_is_one_line_and_an_exit(tmp_path, args, option):
    with taken_port() as busy:
        app_port = busy if option == "--port" else free_port()
        args = [arg.format(busy=busy) for arg in args]
        _, result = run_serve(tmp_path, *args, port=app_port)
        if option != "--port":
            assert not port_open(app_port)
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"CommandError: port {busy} ({option}) is already in use on 0.0.0.0"
    assert "Serving on" not in result.stdout


def test_consume_taken_probe_port_is_one_line_and_an_exit(tmp_path):
    with taken_port() as busy:
        result = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "consume",
                "testapp.consumers.RecordingHandler",
                "--queue=q",
                "--exchange=e",
                "--amqp-host=127.0.0.1",
                f"--probe-port={busy}",
            ],
            cwd=TEST_PROJECT,
            env=base_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert stderr_lines(result) == [
        f"CommandError: port {busy} (--probe-port) is already in use on 0.0.0.0"
    ], result.stderr


@pytest.mark.parametrize(
    "args,env,line",
    [
        (
            ["--app-interface", "no-such-host.invalid"],
            {},
            "CommandError: cannot resolve 'no-such-host.invalid' (--app-interface, from "
            "command line --app-interface): ",
        ),
        (
            [],
            {"HURRICANE_INTERFACE": FOREIGN_ADDRESS},
            f"CommandError: cannot listen on {FOREIGN_ADDRESS} (--interface, from environment "
            "HURRICANE_INTERFACE): not an address of this machine",
        ),
        (
            [],
            {"TEST_SETTINGS": json.dumps({"HURRICANE_APP_INTERFACE": "127.0.0.1:8000"})},
            "CommandError: invalid value '127.0.0.1:8000' for --app-interface (from setting "
            "HURRICANE_APP_INTERFACE): expected a host name or IP address without a port",
        ),
    ],
)
def test_bad_interface_is_one_line_before_anything_listens(tmp_path, args, env, line):
    port, result = run_serve(tmp_path, *args, "--command", "check", **env)
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(line), lines[0]
    assert not port_open(port) and not port_open(port + 1)
    # Reported before the start-up tasks run (they would run in vain).
    assert "Running management command" not in result.stdout


def test_the_docs_explain_where_it_listens():
    section = (Path(ROOT) / "docs" / "listening.md").read_text()
    for words in ("--app-interface", "--interface", "--debugger-port", "::", "127.0.0.1"):
        assert words in section, words
