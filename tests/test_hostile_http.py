"""Hostile and malformed HTTP against a real ``manage.py serve``, over raw sockets:
size limits (414, 431), the idle, header and body timeouts, slowloris clients that
must neither hold a connection nor starve others, malformed requests, and a fuzz run
after which the server still answers with no thread or file descriptor leaked."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import resource
import selectors
import socket
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http import ASGI_DJANGO

from conftest import run_serve, wait_until

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


# -- helpers --------


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection and read until the server closes it (or
    ``timeout``). Returns what was read and whether the server closed the connection;
    a reset counts as closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        try:
            sock.sendall(data)
        except OSError:  # the server answered and closed before reading everything
            pass
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return received, True
            except TimeoutError:
                return received, False
            if not chunk:
                return received, True
            received += chunk
        return received, False
    finally:
        sock.close()


def status_of(response: bytes) -> int | None:
    match = STATUS_LINE.match(response)
    return int(match.group(1)) if match else None


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) ``sock``, without blocking."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def app_answers(server) -> bool:
    return (
        requests.get(server.url("/hello/"), timeout=5).status_code == 200
        and requests.get(server.probe("/alive"), timeout=5).status_code == 200
    )


def threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def assert_no_traceback(server) -> None:
    output = server.output
    assert "Traceback" not in output, output[-5000:]
    assert "Uncaught exception" not in output, output[-5000:]


# -- options --------


def test_limit_options_refuse_bad_values(tmp_path):
    for args, expected in [
        (("--header-timeout", "0"), "--header-timeout"),
        (("--keep-alive-timeout", "soon"), "--keep-alive-timeout"),
        (("--max-header-size", "big"), "--max-header-size"),
    ]:
        _, result = run_serve(tmp_path, *args)
        assert result.returncode != 0
        assert expected in result.stderr and "expected" in result.stderr, result.stderr
    _, result = run_serve(tmp_path, HURRICANE_MAX_HEADERS="-3")
    assert result.returncode != 0
    assert "HURRICANE_MAX_HEADERS" in result.stderr, result.stderr


# -- size limits --------


def test_request_line_and_header_limits(serve):
    server = serve("--max-request-line", "1k", "--max-headers", "20", "--max-header-size", "4k")
    long_url = b"/hello/?" + b"q" * 2000
    response, closed = exchange(server.port, b"GET " + long_url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 414 and closed, response
    # The access log names the request without the whole URL.
    wait_until(lambda: "414 GET /hello/?qqq" in server.output, 10, "the 414 access line")
    assert "q" * 200 not in server.output

    # Repeated names count line by line, not name by name.
    def same_name(count: int) -> bytes:
        return b"".join(b"X-Same: %d\r\n" % i for i in range(count))

    many = same_name(25)
    response, closed = exchange(
        server.port, b"GET /hello/ HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    )
    assert status_of(response) == 431 and closed, response
    response, _ = exchange(
        server.port,
        b"GET /hello/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + same_name(15) + b"\r\n",
    )
    assert status_of(response) == 200, response

    huge = b"GET /hello/ HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 6000 + b"\r\n\r\n"
    response, closed = exchange(server.port, huge)
    assert closed and status_of(response) in (431, None), response
    # Sent whole and read whole, the block is answered rather than just cut.
    assert status_of(response) == 431, response

    assert app_answers(server)
    assert_no_traceback(server)


# -- timeouts --------


def test_idle_keep_alive_outlives_the_header_timeout_then_closes(serve):
    server = serve("--header-timeout", "1", "--keep-alive-timeout", "4")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    request = b"GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n"
    sock.sendall(request)
    assert status_of(sock.recv(65536)) == 200
    # Idle longer than the header timeout: an idle keep-alive connection is not a slow
    # client, and still serves the next request.
    time.sleep(2.5)
    sock.sendall(request)
    assert status_of(sock.recv(65536)) == 200
    idle_since = time.monotonic()
    wait_until(lambda: closed_by_server(sock), 20, "the idle connection to be closed", server)
    assert time.monotonic() - idle_since >= 3.0
    sock.close()


def test_connection_without_a_request_is_closed_after_the_header_timeout(serve):
    server = serve("--header-timeout", "1", "--keep-alive-timeout", "60")
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    partial = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    partial.sendall(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n")
    # The probe port is guarded the same way.
    probe = socket.create_connection(("127.0.0.1", server.probe_port), timeout=10)
    probe.sendall(b"GET /alive HTTP/1.1\r\n")
    for sock in (silent, partial, probe):
        wait_until(lambda s=sock: closed_by_server(s), 15, "the slow connection to close", server)
        sock.close()
    wait_until(lambda: "(--header-timeout)" in server.output, 10, "the log line", server)
    assert app_answers(server)


def test_body_that_does_not_arrive_is_cut_off_after_the_body_timeout(serve):
    server = serve("--body-timeout", "1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    wait_until(lambda: closed_by_server(sock), 15, "the connection to close", server)
    sock.close()
    wait_until(lambda: "(--body-timeout)" in server.output, 10, "the log line", server)
    # A whole body within the timeout is answered.
    response, _ = exchange(
        server.port,
        b"POST /echo/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert status_of(response) == 200 and b'"length": 5' in response, response
    assert_no_traceback(server)


def test_slowloris_clients_are_cut_off_and_starve_no_one(serve):
    server = serve("--header-timeout", "2", "--workers", "4")
    prefix = b"GET /hello/ HTTP/1.1\r\nHost: slow\r\nX-Slow: "
    targets = [server.port] * 200 + [server.probe_port] * 20
    selector = selectors.DefaultSelector()
    slow = []
    for port in targets:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        slow.append(sock)
    statuses: list[int] = []
    stop = threading.Event()

    def normal_client() -> None:
        while not stop.is_set():
            statuses.append(requests.get(server.url("/hello/"), timeout=5).status_code)
            statuses.append(requests.get(server.probe("/alive"), timeout=5).status_code)
            time.sleep(0.05)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        clients = [pool.submit(normal_client) for _ in range(2)]
        open_socks = set(slow)
        sent = 0
        deadline = time.monotonic() + 30
        try:
            while open_socks and time.monotonic() < deadline:
                # One byte per connection per round: the header block never completes.
                byte = prefix[sent : sent + 1] if sent < len(prefix) else b"a"
                sent += 1
                for key, _ in selector.select(timeout=0):
                    if closed_by_server(key.fileobj):
                        open_socks.discard(key.fileobj)
                        selector.unregister(key.fileobj)
                for sock in list(open_socks):
                    try:
                        sock.send(byte)
                    except OSError:
                        open_socks.discard(sock)
                        selector.unregister(sock)
                time.sleep(0.1)
        finally:
            stop.set()
            for future in clients:
                future.result()
            for sock in slow:
                sock.close()
    assert not open_socks, f"{len(open_socks)} slowloris connections still open"
    # Far more than the header timeout's worth of bytes went out: they were cut off,
    # not served.
    assert sent > 20
    assert statuses and set(statuses) == {200}, statuses
    assert len(statuses) >= 10
    wait_until(lambda: "(--header-timeout)" in server.output, 10, "the log line", server)
    assert app_answers(server)


# -- malformed requests --------

CHUNKED_POST = b"POST /echo/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
MALFORMED = {
    "no target": b"GET\r\nHost: x\r\n\r\n",
    "HTTP/0.9 line": b"GET /hello/\r\n\r\n",
    "unknown version": b"GET /hello/ HTTP/9.9\r\nHost: x\r\n\r\n",
    "double spaces": b"GET  /hello/  HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without colon": b"GET /hello/ HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "folded header": b"GET /hello/ HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
    "space in header name": b"GET /hello/ HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n",
    "control byte in value": b"GET /hello/ HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "NUL in request line": b"GET /hel\x00lo/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "chunk size not hex": (CHUNKED_POST + b"zz\r\nab\r\n0\r\n\r\n"),
    "negative chunk size": (CHUNKED_POST + b"-2\r\nab\r\n0\r\n\r\n"),
    "chunk longer than its size": (CHUNKED_POST + b"2\r\nabcd\r\n0\r\n\r\n"),
    "endless chunk-size line": (
        b"POST /echo/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 200
    ),
    "unknown transfer coding": (
        b"POST /echo/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"
    ),
    "two different Content-Lengths": (
        b"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "Content-Length list": b"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "Content-Length not a number": (
        b"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: three\r\n\r\nabc"
    ),
    "signed Content-Length": b"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "Transfer-Encoding and Content-Length": (
        b"POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "binary garbage": b"\xff\xfe\xfd\x00\x01\x02garbage\x80\x81\r\n\r\n",
    "non-ASCII method": b"G\xc3\x89T /hello/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ASCII header name": b"GET /hello/ HTTP/1.1\r\nHost: x\r\nX-\xe9t\xe9: a\r\n\r\n",
    "non-ASCII Host": b"GET /hello/ HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
    "empty lines only": b"\r\n\r\n\r\n\r\n",
}


def test_malformed_requests_get_400_or_a_closed_connection(serve):
    # Django answers some (a bad Host) with 400 on a kept-alive connection: a short
    # keep-alive timeout closes those soon.
    server = serve("--keep-alive-timeout", "1")
    outcomes = {}
    for name, data in MALFORMED.items():
        response, closed = exchange(server.port, data)
        outcomes[name] = (status_of(response), closed, response[:60])
        # Each one leaves the server answering.
        assert app_answers(server), name
    wrong = {
        name: outcome
        for name, outcome in outcomes.items()
        if not (outcome[0] == 400 or (outcome[0] is None and outcome[1]))
    }
    assert not wrong, wrong
    # Most are answered, not just dropped.
    assert sum(1 for status, _, _ in outcomes.values() if status == 400) >= len(MALFORMED) - 3
    assert_no_traceback(server)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_it_pauses_accepting_and_recovers(serve):
    """A process at its open files limit cannot accept: the connections wait in the
    listen queue. It must not spin on the readable socket (it burnt a core and logged
    18,627 tracebacks in 3 s) but say so once and take them when descriptors free up."""
    server = serve()
    pid = server.process.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 8, hard))
    clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(24)]
    try:
        wait_until(lambda: "Cannot accept connections" in server.output, 10, "the warning", server)
        before = cpu_seconds(pid)
        time.sleep(2)
        assert cpu_seconds(pid) - before < 0.5
        for client in clients[:20]:
            client.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        wait_until(lambda: app_answers(server), 10, "answers again", server)
    finally:
        for client in clients:
            client.close()
    line = (
        rf"WARNING hurricane.server.general Cannot accept connections on port {server.port}: "
        rf"Too many open files \(open files limit {in_use + 8}\); new connections wait in "
        r"the listen queue, accepting is retried every 0.1 s"
    )
    assert len(re.findall(line, server.output)) == 1, server.output
    assert "Traceback" not in server.output, server.output


# -- fuzzing --------

SEPARATORS = [b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"]
HEADER_NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Expect",
    b"Cookie",
    b"Content-Type",
    b"X-Forwarded-For",
    b"Upgrade",
]
HEADER_VALUES = [b"x", b"0", b"5", b"-1", b"99999999999", b"chunked", b"close", b"keep-alive"]
TARGETS = [b"/hello/", b"/echo/", b"/alive", b"/ready", b"/metrics", b"*", b"http://x/hello/"]
METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"", b"http/1.1"]
latin = st.binary(max_size=24)


def pick(draw, options: list[bytes]) -> bytes:
    """Mostly one of ``options``; now and then random bytes instead."""
    if draw(st.integers(0, 9)) == 0:
        return draw(latin)
    return draw(st.sampled_from(options))


@st.composite
def chunked_body(draw) -> bytes:
    body = b""
    for data in draw(st.lists(st.binary(max_size=20), max_size=4)):
        size = draw(st.one_of(st.just(b"%x" % len(data)), latin))
        body += size + draw(st.sampled_from(SEPARATORS)) + data + b"\r\n"
    return body + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n", b"", b"0;x=y\r\n\r\n"]))


@st.composite
def http_request(draw) -> bytes:
    newline = draw(st.sampled_from(SEPARATORS[:2]))
    line = pick(draw, METHODS) + b" " + pick(draw, TARGETS) + b" " + pick(draw, VERSIONS)
    headers = b""
    for _ in range(draw(st.integers(0, 6))):
        name, value = pick(draw, HEADER_NAMES), pick(draw, HEADER_VALUES)
        headers += name + draw(st.sampled_from([b": ", b":", b" : ", b""])) + value + newline
    body = draw(st.one_of(st.just(b""), st.binary(max_size=64), chunked_body()))
    request = line + newline + headers + newline + body
    # Mutations: flip, insert or drop a few bytes, or cut the request short.
    for _ in range(draw(st.integers(0, 3))):
        if not request:
            break
        position = draw(st.integers(0, len(request) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "drop", "cut"]))
        byte = bytes([draw(st.integers(0, 255))])
        if kind == "flip":
            request = request[:position] + byte + request[position + 1 :]
        elif kind == "insert":
            request = request[:position] + byte + request[position:]
        elif kind == "drop":
            request = request[:position] + request[position + 1 :]
        else:
            request = request[:position]
    return request


@pytest.mark.parametrize("path_kind", ["wsgi", "asgi"])
def test_fuzzed_requests_leave_the_server_healthy_and_leak_nothing(serve, path_kind):
    # Short timeouts, so that the many incomplete requests are closed quickly. On the
    # ASGI path too: its request and response code is its own.
    asgi = ["--asgi"] if path_kind == "asgi" else []
    env = {"TEST_SETTINGS": json.dumps(ASGI_DJANGO)} if asgi else None
    server = serve(
        *asgi,
        "--header-timeout", "0.3",
        "--body-timeout", "0.3",
        "--keep-alive-timeout", "0.5",
        "--max-body-size", "4k",
        "--workers", "4",
        "--max-workers", "4",
        env=env,
    )  # fmt: skip
    # Warm up what starts lazily (worker threads, the probe check thread), then let
    # the warm-up connections close.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: app_answers(server), range(16)))
    assert requests.get(server.probe("/ready"), timeout=5).status_code == 200
    pid = server.process.pid
    time.sleep(1.5)
    baseline = threads_and_fds(pid)

    sent: list[tuple[bytes, concurrent.futures.Future]] = []
    with concurrent.futures.ThreadPoolExecutor(48) as pool:

        @settings(
            max_examples=2500,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.one_of(http_request(), st.binary(max_size=200)))
        def send(data: bytes) -> None:
            # Sent concurrently: a request the server waits on for its header or body
            # timeout must not hold up the run.
            sent.append((data, pool.submit(exchange, server.port, data, 5.0)))

        send()
    assert len(sent) >= 2000
    results = [(data, future.result()) for data, future in sent]
    hung = [data for data, (response, closed) in results if not closed and not response]
    assert not hung, f"{len(hung)} requests got neither an answer nor a close: {hung[:5]}"
    statuses = {status_of(response) for _, (response, _) in results}
    assert 400 in statuses and 200 in statuses, statuses
    assert not {status for status in statuses if status and status >= 500}, statuses

    assert app_answers(server)
    try:
        wait_until(lambda: threads_and_fds(pid) == baseline, 20, "no leaked thread or fd")
    except AssertionError:
        raise AssertionError(
            f"threads and fds {threads_and_fds(pid)}, before the run {baseline}"
        ) from None
    assert_no_traceback(server)
