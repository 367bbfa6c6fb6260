"""Behind a proxy: ``--forwarded-allow-ips`` decides whose X-Forwarded-For and
X-Forwarded-Proto headers set ``REMOTE_ADDR`` and ``request.is_secure()``, on the WSGI
and the ASGI path; and a request for a host not in ALLOWED_HOSTS is logged in one line.

The test client connects from 127.0.0.1, so "the proxy" is the test itself: a trusted
peer when 127.0.0.1 is in the list, an untrusted one when it is not. The views
(``/meta/``, ``/async/meta/``) answer what Django saw, as JSON."""

from __future__ import annotations

import http.client
import ipaddress
import json
import re

import pytest
import requests
from test_http import wait_for_log

from conftest import port_open, run_serve
from hurricane.http.forwarded import TrustedProxies, parse_address

ASGI_ENV = {"TEST_SETTINGS": json.dumps({"ASGI_APPLICATION": "testproject.asgi.application"})}
# The X-Forwarded-For entries looked at, from the right, as docs/proxies.md states.
HOPS_WALKED = 16


def seen(server, path: str = "/meta/", **headers: str) -> tuple[str, bool]:
    """The REMOTE_ADDR and is_secure() a view saw for a request with ``headers``."""
    response = requests.get(server.url(path), headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["remote_addr"], answer["secure"]


def seen_with_header_lines(server, lines: list[tuple[str, str]]) -> tuple[str, bool]:
    """As :func:`seen`, with header lines sent as given (a name may repeat)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("GET", "/meta/")
        for name, value in lines:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 200
        answer = json.loads(response.read())
    finally:
        connection.close()
    return answer["remote_addr"], answer["secure"]


# -- end to end: WSGI ---------------------------------------------------------------------


def test_default_trusts_no_one(serve):
    server = serve(migrate=False)
    assert seen(server) == ("127.0.0.1", False)
    assert seen(server, **{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}) == (
        "127.0.0.1",
        False,
    )


def test_trusted_peer_sets_client_address_and_scheme(serve):
    server = serve("--forwarded-allow-ips", "127.0.0.1", migrate=False)
    assert seen(server, **{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}) == (
        "203.0.113.7",
        True,
    )
    # Without the headers, the peer itself is the client.
    assert seen(server) == ("127.0.0.1", False)
    # A client prepends a fake address; the trusted proxy appended the real one.
    assert seen(server, **{"X-Forwarded-For": "198.51.100.66, 203.0.113.7"}) == (
        "203.0.113.7",
        False,
    )
    # The scheme the nearest proxy appended counts; one it did not write is ignored.
    assert seen(server, **{"X-Forwarded-Proto": "http, https"})[1] is True
    assert seen(server, **{"X-Forwarded-Proto": "https, http"})[1] is False
    assert seen(server, **{"X-Forwarded-Proto": "wss"})[1] is False
    # Not an address: not believed, the peer stands.
    assert seen(server, **{"X-Forwarded-For": "<script>"})[0] == "127.0.0.1"
    # Several header lines count as one list, in order.
    lines = [
        ("X-Forwarded-For", "198.51.100.66"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
    ]
    assert seen_with_header_lines(server, lines) == ("203.0.113.7", True)
    # The access log names the client, not the proxy.
    wait_for_log(server, r"200 GET /meta/ \(203\.0\.113\.7\)")


def test_networks_walk_past_trusted_hops(serve):
    # From the environment, with networks: 10.0.0.0/8 stands for the proxies in front.
    server = serve(
        migrate=False,
        env={"HURRICANE_FORWARDED_ALLOW_IPS": "10.0.0.0/8, 127.0.0.0/8, fd00::/8"},
    )
    chain = "198.51.100.66, 203.0.113.7, 10.1.2.3, fd00::5"
    assert seen(server, **{"X-Forwarded-For": chain}) == ("203.0.113.7", False)
    # Every hop trusted: the leftmost is the client.
    assert seen(server, **{"X-Forwarded-For": "10.9.9.9, 10.1.2.3"})[0] == "10.9.9.9"


def test_zone_id_of_unsafe_characters_is_no_address(serve):
    server = serve("--forwarded-allow-ips", "127.0.0.1,fe80::/10", migrate=False)
    xff = "X-Forwarded-For"
    assert seen(server, **{xff: "fe80::1%eth0"})[0] == "fe80::1%eth0"
    assert seen(server, **{xff: "[fe80::1%2]:4711"})[0] == "fe80::1%2"
    # A trusted hop with a zone is walked past like any other.
    assert seen(server, **{xff: "203.0.113.7, fe80::1%eth0"})[0] == "203.0.113.7"
    # Not an address: the walk ends, the peer stands.
    for bad in ("fe80::1%a b c", "fe80::1%<script>", "fe80::1%" + "a" * 16, "fe80::1%\xe9"):
        assert seen(server, **{xff: f"203.0.113.7, {bad}"})[0] == "127.0.0.1", bad
    # Behind a trusted hop, the hop stands.
    assert seen(server, **{xff: "fe80::1%a b c, fe80::2"})[0] == "fe80::2"


def test_walk_ends_after_a_bounded_number_of_hops(serve):
    server = serve("--forwarded-allow-ips", "10.0.0.0/8,127.0.0.1", migrate=False)
    hops = [f"10.{i // 100}.{i % 100}.1" for i in range(6000)]  # 60 KB, every one trusted

    def client(*chain: str) -> str:
        return seen(server, **{"X-Forwarded-For": ",".join(chain)})[0]

    # Behind 6,000 trusted hops, the last one looked at stands.
    assert client("203.0.113.7", *hops) == hops[-HOPS_WALKED]
    # The client right at the bound is found; one trusted hop more and it is past it.
    assert client("203.0.113.7", *hops[-(HOPS_WALKED - 1) :]) == "203.0.113.7"
    assert client("203.0.113.7", *hops[-HOPS_WALKED:]) == hops[-HOPS_WALKED]
    # One header line per hop counts the same.
    lines = [("X-Forwarded-For", hop) for hop in ["203.0.113.7", *hops[-HOPS_WALKED:]]]
    assert seen_with_header_lines(server, lines)[0] == hops[-HOPS_WALKED]
    lines = [("X-Forwarded-For", hop) for hop in ["203.0.113.7", *hops[-(HOPS_WALKED - 1) :]]]
    assert seen_with_header_lines(server, lines)[0] == "203.0.113.7"


def test_star_trusts_any_peer(serve):
    # From a Django setting, as a list.
    settings = json.dumps({"HURRICANE_FORWARDED_ALLOW_IPS": ["*"]})
    server = serve(migrate=False, env={"TEST_SETTINGS": settings})
    assert seen(server, **{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}) == (
        "203.0.113.7",
        True,
    )
    # Every hop is believed: the leftmost address is the client.
    assert seen(server, **{"X-Forwarded-For": "198.51.100.66, 203.0.113.7"})[0] == "198.51.100.66"


def test_peer_outside_the_list_is_not_believed(serve):
    server = serve("--forwarded-allow-ips", "10.0.0.0/8,fd00::1", migrate=False)
    headers = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https"}
    assert seen(server, **headers) == ("127.0.0.1", False)


def test_bad_value_stops_serve_with_one_line(tmp_path):
    port, result = run_serve(tmp_path, "--forwarded-allow-ips", "10.0.0.0/8,ingress.local")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--forwarded-allow-ips" in lines[0]
    assert "'ingress.local' is neither" in lines[0]
    assert not port_open(port)


def test_bad_value_from_environment_names_the_variable(tmp_path):
    _, result = run_serve(tmp_path, HURRICANE_FORWARDED_ALLOW_IPS="10.0.0.0/33")
    assert result.returncode != 0
    assert "environment HURRICANE_FORWARDED_ALLOW_IPS" in result.stderr
    assert "'10.0.0.0/33' is neither" in result.stderr
    assert "Traceback" not in result.stderr


# -- end to end: ASGI ---------------------------------------------------------------------


def test_asgi_trusted_peer(serve):
    server = serve("--forwarded-allow-ips", "127.0.0.1", migrate=False, env=ASGI_ENV)
    headers = {"X-Forwarded-For": "198.51.100.66, 203.0.113.7", "X-Forwarded-Proto": "https"}
    # An async view (the ASGI scope) and a sync one (the worker pool) agree.
    assert seen(server, "/async/meta/", **headers) == ("203.0.113.7", True)
    assert seen(server, "/meta/", **headers) == ("203.0.113.7", True)
    assert seen(server, "/async/meta/") == ("127.0.0.1", False)
    wait_for_log(server, r"200 GET /async/meta/ \(203\.0\.113\.7\)")


def test_asgi_untrusted_peer(serve):
    server = serve(migrate=False, env=ASGI_ENV)
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    assert seen(server, "/async/meta/", **headers) == ("127.0.0.1", False)
    assert seen(server, "/meta/", **headers) == ("127.0.0.1", False)


# -- DisallowedHost -----------------------------------------------------------------------

ROOT_CONSOLE_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
DISALLOWED = re.compile(r"Invalid HTTP_HOST header: 'evil\.example'")


@pytest.mark.parametrize(
    "env",
    [
        # Django's own console handler (DEBUG), and a project logging everything to the
        # console, as is usual in a container.
        {"TEST_DEBUG": "1", "TEST_SETTINGS": json.dumps({"ALLOWED_HOSTS": ["good.example"]})},
        {
            "TEST_SETTINGS": json.dumps(
                {"ALLOWED_HOSTS": ["good.example"], "LOGGING": ROOT_CONSOLE_LOGGING}
            )
        },
    ],
    ids=["debug", "root-console"],
)
def test_disallowed_host_is_one_line_without_traceback(serve, env):
    server = serve(migrate=False, env=env)
    for _ in range(2):
        response = requests.get(server.url("/meta/"), headers={"Host": "evil.example"}, timeout=10)
        assert response.status_code == 400
    response = requests.get(server.url("/meta/"), headers={"Host": "good.example"}, timeout=10)
    assert response.status_code == 200
    wait_for_log(server, DISALLOWED.pattern + r"(.|\n)*" + DISALLOWED.pattern)
    assert len(DISALLOWED.findall(server.output)) == 2
    assert "Traceback" not in server.output


def test_disallowed_host_logger_configured_by_the_project_is_left_alone(serve):
    logging = {
        **ROOT_CONSOLE_LOGGING,
        "loggers": {"django.security.DisallowedHost": {"level": "ERROR"}},
    }
    settings = {"ALLOWED_HOSTS": ["good.example"], "LOGGING": logging}
    server = serve(migrate=False, env={"TEST_SETTINGS": json.dumps(settings)})
    response = requests.get(server.url("/meta/"), headers={"Host": "evil.example"}, timeout=10)
    assert response.status_code == 400
    wait_for_log(server, "Traceback")
    assert DISALLOWED.search(server.output)


# -- the rule itself ----------------------------------------------------------------------


class Headers:
    """The part of Tornado's HTTPHeaders the rule uses."""

    def __init__(self, **lines: list[str]) -> None:
        self.lines = {name.replace("_", "-").lower(): values for name, values in lines.items()}

    def get_list(self, name: str) -> list[str]:
        return self.lines.get(name.lower(), [])


def client_and_scheme(allow: str, peer: str, **lines: list[str]) -> tuple[str, str]:
    proxies = TrustedProxies.parse(allow)
    assert proxies is not None
    return proxies.client_and_scheme(peer, "http", Headers(**lines))


@pytest.mark.parametrize("value", ["", " ", ",", [], ()])
def test_empty_list_trusts_no_one(value):
    assert TrustedProxies.parse(value) is None


@pytest.mark.parametrize(
    "value,bad",
    [
        ("10.0.0.0/8,proxy", "proxy"),
        ("10.0.0.300", "10.0.0.300"),
        ("fd00::/129", "fd00::/129"),
        (["127.0.0.1", "**"], "**"),
    ],
)
def test_bad_entry_is_named(value, bad):
    with pytest.raises(ValueError, match=re.escape(f"{bad!r} is neither")):
        TrustedProxies.parse(value)


def test_rule_ipv6_and_mapped_addresses():
    assert client_and_scheme("::1", "::1", x_forwarded_for=["2001:db8::7"]) == (
        "2001:db8::7",
        "http",
    )
    # An IPv4 peer seen through a dual-stack socket is the IPv4 address.
    assert client_and_scheme("127.0.0.1", "::ffff:127.0.0.1", x_forwarded_for=["192.0.2.7"])[0] == (
        "192.0.2.7"
    )
    assert client_and_scheme("fd00::/8", "fd00::1", x_forwarded_for=["192.0.2.7, fd00::2"])[0] == (
        "192.0.2.7"
    )


def test_rule_addresses_with_ports_and_invalid_entries():
    trusted = "10.0.0.0/8"
    assert client_and_scheme(trusted, "10.0.0.1", x_forwarded_for=["192.0.2.7:4711"])[0] == (
        "192.0.2.7"
    )
    assert client_and_scheme(trusted, "10.0.0.1", x_forwarded_for=["[2001:db8::7]:4711"])[0] == (
        "2001:db8::7"
    )
    # The walk stops at an entry that is no address: the last believed hop stands.
    chain = ["192.0.2.7, unknown, 10.0.0.2"]
    assert client_and_scheme(trusted, "10.0.0.1", x_forwarded_for=chain)[0] == "10.0.0.2"
    assert client_and_scheme(trusted, "10.0.0.1", x_forwarded_for=[""])[0] == "10.0.0.1"


def test_rule_scheme_only_http_or_https():
    assert client_and_scheme("*", "192.0.2.1", x_forwarded_proto=[" HTTPS "])[1] == "https"
    assert client_and_scheme("*", "192.0.2.1", x_forwarded_proto=["https", "ftp"])[1] == "http"
    assert client_and_scheme("*", "192.0.2.1", x_forwarded_proto=[""])[1] == "http"


def test_rule_untrusted_peer_changes_nothing():
    proxies = TrustedProxies.parse("10.0.0.0/8")
    headers = Headers(x_forwarded_for=["10.1.1.1"], x_forwarded_proto=["https"])
    assert proxies.client_and_scheme("192.0.2.1", "http", headers) == ("192.0.2.1", "http")


def test_rule_walks_a_bounded_number_of_entries():
    hops = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(100)]
    chain = ",".join(["192.0.2.7", *hops])
    assert client_and_scheme("10.0.0.0/8", "10.0.0.1", x_forwarded_for=[chain])[0] == hops[-16]
    assert client_and_scheme("*", "10.0.0.1", x_forwarded_for=[chain])[0] == hops[-16]
    lines = ["192.0.2.7", *hops]
    assert client_and_scheme("10.0.0.0/8", "10.0.0.1", x_forwarded_for=lines)[0] == hops[-16]
    # Lines of several entries each: entries are counted, not lines.
    lines = ["192.0.2.7", ",".join(hops[-20:-8]), ",".join(hops[-8:])]
    assert client_and_scheme("10.0.0.0/8", "10.0.0.1", x_forwarded_for=lines)[0] == hops[-16]
    lines = ["192.0.2.7", ",".join(hops[-15:-8]), ",".join(hops[-8:])]
    assert client_and_scheme("10.0.0.0/8", "10.0.0.1", x_forwarded_for=lines)[0] == "192.0.2.7"


def test_parse_address_rejects_what_is_not_an_address():
    bad = ["", "unknown", "1.2.3", "1.2.3.4:", "1.2.3.4:http", "[::1", "[::1]:", "[::1]80"]
    bad += ["fe80::1%", "fe80::1%a b", "fe80::1%a/b", "fe80::1%" + "x" * 16, "fe80::1%\u00e9"]
    for entry in [*bad, "example.com:80"]:
        assert parse_address(entry) is None, entry
    assert parse_address(" 1.2.3.4 ") == ipaddress.ip_address("1.2.3.4")
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    for zone in ("eth0", "2", "br-1a2b.100", "x" * 15):
        assert str(parse_address(f"fe80::1%{zone}")) == f"fe80::1%{zone}"
