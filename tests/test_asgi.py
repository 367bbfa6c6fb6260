"""The ASGI path, observed over real sockets: which mode ``serve`` picks, async views
on the event loop and sync views in the worker pool, streaming, request bodies,
probes and metrics, graceful shutdown, a custom ASGI application and keep-alive.
The views are in ``tests/testproject/testapp/async_views.py``."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import time

import pytest
import requests
from test_http import read_until, wait_for_log
from test_lifecycle import BackgroundRequest
from test_metrics_webhooks import scrape_until, value_of

from conftest import status, wait_until

DJANGO_HANDLER = "testproject.asgi.application"
CUSTOM_APPLICATION = "testproject.asgi.with_header"
DISPATCHER_MODE = "ASGI: async views on the loop, sync views in the pool"
SERVING = re.compile(r"Serving on port \d+ \((?P<mode>[^;]+);")


# -- helpers ---------------------------------------------------------------------------------


def asgi_settings(application: str = DJANGO_HANDLER) -> dict[str, str]:
    """The environment that makes the test project name ``application`` as its
    ASGI_APPLICATION."""
    return {"TEST_SETTINGS": json.dumps({"ASGI_APPLICATION": application})}


def serving_mode(server) -> str:
    wait_for_log(server, SERVING.pattern)
    return SERVING.search(server.output)["mode"]


def thread_of(server, path: str) -> str:
    response = requests.get(server.url(path), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["thread"]


def decode_chunked(raw: bytes) -> bytes:
    """The body of a chunked transfer encoding, checked strictly: every size line is
    hex, every chunk ends in CRLF, the last chunk is empty and nothing follows it."""
    body = bytearray()
    at = 0
    while True:
        line_end = raw.find(b"\r\n", at)
        assert line_end >= 0, f"a chunk size line without CRLF at byte {at}"
        size_line = raw[at:line_end]
        assert re.fullmatch(rb"[0-9a-fA-F]+", size_line), f"bad chunk size {size_line!r}"
        size = int(size_line, 16)
        at = line_end + 2
        if size == 0:
            assert raw[at:] == b"\r\n", f"bytes after the last chunk: {raw[at:]!r}"
            return bytes(body)
        assert raw[at + size : at + size + 2] == b"\r\n", f"a chunk of {size} bytes without CRLF"
        body += raw[at : at + size]
        at += size + 2


def split_head(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers (lower-case names) and what follows the head."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, rest


def read_to_end(sock: socket.socket, until: bytes | None = None, timeout: float = 15) -> bytes:
    """Everything ``sock`` receives until the peer closes it (or ``until`` ends it)."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    while until is None or not received.endswith(until):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no end within {timeout} s; got {bytes(received[-200:])!r}"
        sock.settimeout(remaining)
        data = sock.recv(1 << 20)
        if not data:
            assert until is None, f"connection closed before {until!r}"
            break
        received += data
    return bytes(received)


def read_response(sock: socket.socket, buffer: bytes) -> tuple[str, dict[str, str], bytes, bytes]:
    """One response with a Content-Length from ``sock``; returns its status line,
    headers, body and the bytes read past it."""
    buffer = read_until(sock, buffer, b"\r\n\r\n", 15)
    status_line, headers, rest = split_head(buffer)
    length = int(headers["content-length"])
    while len(rest) < length:
        sock.settimeout(15)
        data = sock.recv(65536)
        assert data, f"connection closed within a body; got {rest!r}"
        rest += data
    return status_line, headers, rest[:length], rest[length:]


# -- 1. --asgi: async and sync views, HEAD, errors ---------------------------------------------


def test_asgi_flag_serves_async_and_sync_views(serve):
    server = serve("--asgi")
    assert serving_mode(server) == DISPATCHER_MODE

    async_hello = requests.get(server.url("/async/hello/"), timeout=10)
    assert async_hello.status_code == 200
    assert async_hello.text == "Hello from async"
    sync_hello = requests.get(server.url("/hello/"), timeout=10)
    assert sync_hello.status_code == 200
    assert sync_hello.text == "Hello from Hurricane"
    assert status(server.url("/no-such-page/")) == 404

    # HEAD on an async view: its headers, no body. The next request on the same
    # connection proves that no stray body bytes were sent.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("HEAD", "/async/hello/")
        head = connection.getresponse()
        assert head.status == 200
        assert head.getheader("Content-Type").startswith("text/html")
        assert int(head.getheader("Content-Length")) == len("Hello from async")
        assert head.read() == b""
        connection.request("GET", "/async/hello/")
        after = connection.getresponse()
        assert after.status == 200
        assert after.read() == b"Hello from async"
    finally:
        connection.close()


def test_async_view_error_gives_500_and_the_server_keeps_serving(serve):
    server = serve("--asgi")
    for _ in range(2):
        failed = requests.get(server.url("/async/error/"), timeout=10)
        assert failed.status_code == 500
        assert "this async view always fails" not in failed.text  # no traceback leaks
        assert requests.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"
        assert requests.get(server.url("/hello/"), timeout=10).text == "Hello from Hurricane"
    assert server.process.poll() is None
    wait_for_log(server, r"500 GET /async/error/")


def test_async_response_http_cannot_carry_gets_500(serve):
    """As on the WSGI path (tests/test_http.py): a header value with a control
    character gets the client a 500 at once, and the connection serves on."""
    server = serve("--asgi")
    with requests.Session() as session:
        for _ in range(2):
            failed = session.get(server.url("/async/bad-header/"), timeout=10)
            assert (failed.status_code, failed.text) == (500, "Internal Server Error\n")
            assert session.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"
    wait_for_log(server, r"Answered 500 to GET /async/bad-header/ instead of the application")


# -- 2. which mode serve picks; where views run -------------------------------------------------


def test_asgi_application_setting_selects_asgi_with_async_views_on_the_loop(serve):
    server = serve(env=asgi_settings())
    assert serving_mode(server) == DISPATCHER_MODE
    # An async view runs on the event loop, in the main thread ...
    assert thread_of(server, "/async/thread/") == "MainThread"
    # ... a sync view in the worker pool ...
    assert thread_of(server, "/meta/").startswith("hurricane-worker-")
    # ... and an async view's thread-sensitive sync code on a thread lent to its request.
    assert thread_of(server, "/async/sync-thread/").startswith("hurricane-async-sync")
    # A sync view's async_to_sync runs its coroutine on the server's loop, as it would
    # from Django's own sync_to_async threads.
    assert thread_of(server, "/async-to-sync-thread/") == "MainThread"


def test_async_views_pool_runs_short_requests_in_a_worker_and_long_views_on_the_loop(serve):
    """--async-views pool: the coroutine still runs on the event loop, the request's
    sync code in a worker thread; a view that held its thread over a second goes to
    the loop from then on, with one line saying so."""
    server = serve("--async-views", "pool", env=asgi_settings())
    assert thread_of(server, "/async/thread/") == "MainThread"
    assert thread_of(server, "/async/sync-thread/").startswith("hurricane-worker-")
    assert thread_of(server, "/async/sync-thread/?sleep=1.2").startswith("hurricane-worker-")
    wait_for_log(
        server,
        r"The async view testapp\.async_views\.sync_thread held a worker thread for 1\.\d s: "
        r"its requests run on the event loop from now on",
    )
    assert thread_of(server, "/async/sync-thread/").startswith("hurricane-async-sync")
    # Other async views are not concerned.
    assert thread_of(server, "/async/meta/") == "MainThread"
    assert requests.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"


def test_async_views_run_on_the_loop_that_loop_names(serve):
    """What the start-up log says is the loop the views really run on: uvloop by
    default, also in the serving processes of --processes (their supervisor keeps
    asyncio's loop for itself), and asyncio's own with --loop asyncio."""
    for args, expected in (
        ((), "uvloop"),
        (("--processes", "2", "--workers", "2"), "uvloop"),
        (("--loop", "asyncio"), "asyncio"),
    ):
        server = serve(*args, env=asgi_settings(), migrate=False)
        for _ in range(4):
            response = requests.get(server.url("/async/thread/"), timeout=10)
            assert response.status_code == 200, response.text
            assert response.json() == {"thread": "MainThread", "loop": expected}, args
        server.kill()  # the fixture would; one server at a time keeps the test light


def test_hurricane_asgi_false_in_the_environment_forces_wsgi(serve):
    server = serve(env={**asgi_settings(), "HURRICANE_ASGI": "false"})
    assert serving_mode(server) == "WSGI"
    assert thread_of(server, "/async/thread/") != "MainThread"
    assert thread_of(server, "/meta/").startswith("hurricane-worker-")
    assert requests.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"


def test_without_asgi_application_the_default_is_wsgi(serve):
    server = serve()
    assert serving_mode(server) == "WSGI"
    assert thread_of(server, "/async/thread/") != "MainThread"
    # As under any WSGI server: async_to_sync makes a loop of its own.
    assert thread_of(server, "/async-to-sync-thread/") != "MainThread"
    assert requests.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"


# -- 3. concurrency -----------------------------------------------------------------------------


def test_async_views_sleep_concurrently_on_the_loop(serve):
    server = serve("--asgi")
    count, seconds = 50, 0.5
    assert status(server.url("/async/sleep/?seconds=0")) == 200  # warm up
    with concurrent.futures.ThreadPoolExecutor(count) as executor:
        began = time.monotonic()
        responses = list(
            executor.map(
                lambda _: requests.get(server.url(f"/async/sleep/?seconds={seconds}"), timeout=30),
                range(count),
            )
        )
        elapsed = time.monotonic() - began
    assert [r.status_code for r in responses] == [200] * count
    assert {r.text for r in responses} == {f"slept {seconds}"}
    # One after another they would take 25 s; the default workers alone cannot hold 50.
    assert elapsed < 5.0, elapsed


# -- 4. streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("async_views", ["loop", "pool"])
def test_async_generator_streams_as_produced_in_valid_chunks(serve, tmp_path, async_views):
    server = serve("--asgi", "--async-views", async_views)
    gate = tmp_path / "open-stream"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /async/stream/?gate={gate} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        received = read_until(sock, b"", b"first chunk", 15)
        status_line, headers, _ = split_head(received)
        assert status_line.startswith("HTTP/1.1 200"), status_line
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        # The generator still waits for the gate: the first chunk was not held back.
        assert not gate.exists()
        assert b"second chunk" not in received
        gate.touch()
        received = read_until(sock, received, b"\r\n0\r\n\r\n", 15)
    _, _, raw_body = split_head(received)
    assert decode_chunked(raw_body) == b"first chunk\nsecond chunk\n"
    if async_views == "pool":  # a view that streams goes to the loop from then on
        wait_for_log(
            server,
            r"The async view testapp\.async_views\.stream streams its response: "
            r"its requests run on the event loop from now on",
        )


def test_failing_async_generator_gives_500_or_a_cut_off_body(serve):
    server = serve("--asgi")
    # It fails before its first chunk: the response can still be a 500.
    assert status(server.url("/async/stream-error/?after=0")) == 500
    # It fails after two chunks: the body ends without the last chunk, and the
    # connection closes, so the client cannot take it for complete.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /async/stream-error/?after=2 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = read_to_end(sock)
    status_line, headers, raw_body = split_head(received)
    assert status_line.startswith("HTTP/1.1 200"), status_line
    assert headers["transfer-encoding"] == "chunked"
    assert raw_body == b"8\r\nchunk 0\n\r\n8\r\nchunk 1\n\r\n"  # no terminating 0 chunk
    assert requests.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"
    assert server.process.poll() is None


def test_slow_client_holds_back_the_async_generator(serve, tmp_path):
    server = serve("--asgi")
    count, size = 800, 65536  # 50 MiB: far more than the sockets' buffers hold
    progress = tmp_path / "progress"

    def handed_on() -> int:
        return int(progress.read_text()) if progress.exists() else 0

    with socket.socket() as sock:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            f"GET /async/big/?chunks={count}&progress={progress} HTTP/1.1\r\n"
            "Host: localhost\r\n\r\n".encode()
        )
        received = read_until(sock, b"", b"\r\n\r\n", 15)
        # The client reads nothing more: the generator must come to a stop.
        samples = [-1]

        def stalled() -> bool:
            samples.append(handed_on())
            time.sleep(0.3)
            return samples[-1] > 0 and samples[-1] == handed_on()

        wait_until(stalled, 20, "the generator to wait for the client", server)
        assert handed_on() < count // 2, samples
        # Reading on lets it finish.
        _, _, raw = split_head(received)
        raw += read_to_end(sock, until=b"\r\n0\r\n\r\n")
    assert len(decode_chunked(raw)) == count * size
    assert handed_on() == count


def test_sync_iterator_stream_from_an_async_view(serve):
    server = serve("--asgi")
    count = 200
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", f"/async/sync-stream/?count={count}")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        # http.client decodes the chunks and raises on a malformed or cut-off body.
        assert response.read() == b"".join(f"line {n}\n".encode() for n in range(count))
        assert not response.will_close
        # The connection is in a clean state for the next request.
        connection.request("GET", "/async/hello/")
        assert connection.getresponse().read() == b"Hello from async"
    finally:
        connection.close()


# -- 5. request bodies --------------------------------------------------------------------------


def test_request_bodies_reach_async_views_whole(serve):
    server = serve("--asgi")
    megabyte = os.urandom(1024 * 1024)
    for body in (megabyte, b""):
        response = requests.post(server.url("/async/echo/"), data=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "method": "POST",
        }
    # A chunked request body arrives whole too.
    parts = [b"x" * 1000, b"y" * 2000, b"z" * 3]
    chunked = requests.post(server.url("/async/echo/"), data=iter(parts), timeout=30)
    assert chunked.status_code == 200
    assert chunked.json()["length"] == 3003
    assert chunked.json()["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_max_body_size_gives_413_on_the_asgi_path(serve):
    server = serve("--asgi", "--max-body-size", "1024")
    fits = requests.post(server.url("/async/echo/"), data=b"a" * 1024, timeout=10)
    assert fits.status_code == 200
    assert fits.json()["length"] == 1024
    too_big = requests.post(server.url("/async/echo/"), data=b"b" * 5000, timeout=10)
    assert too_big.status_code == 413
    assert requests.get(server.url("/async/hello/"), timeout=10).status_code == 200
    assert server.process.poll() is None
    wait_for_log(server, r"413 POST /async/echo/")
    assert "200 POST /async/echo/" in server.output
    assert "Traceback" not in server.output, server.output


# -- 6. probes and metrics ----------------------------------------------------------------------


def test_probes_and_metrics_in_asgi_mode(serve):
    server = serve("--asgi")
    for path in ("/startup", "/ready", "/alive"):
        response = requests.get(server.probe(path), timeout=10)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["Cache-Control"] == "no-store"
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(server.url("/async/hello/"), timeout=10).status_code == 200
        assert session.get(server.url("/async/error/"), timeout=10).status_code == 500
        assert session.get(server.url("/hello/"), timeout=10).status_code == 200

    def counted(route: str, code: str, samples) -> float:
        return value_of(
            samples, "hurricane_http_requests_total", method="GET", route=route, status=code
        )

    samples = scrape_until(
        server,
        lambda s: value_of(s, "request_counter_total") == 5,
        "every app request to be counted",
    )
    assert counted("async/hello/", "200", samples) == 3
    assert counted("async/error/", "500", samples) == 1
    assert counted("hello/", "200", samples) == 1
    assert value_of(samples, "hurricane_http_requests_in_flight") == 0


# -- 7. graceful shutdown and clients that go away ----------------------------------------------


def test_sigterm_lets_an_in_flight_async_request_finish(serve, tmp_path):
    server = serve("--asgi")
    gate, entered = tmp_path / "open-gate", tmp_path / "entered"
    in_flight = BackgroundRequest(server.url(f"/async/gate/?file={gate}&entered={entered}"))
    wait_until(entered.exists, 15, "the async view to start", server)
    server.signal(signal.SIGTERM)
    wait_until(lambda: status(server.probe("/ready")) == 503, 10, "readiness to answer 503", server)
    assert server.process.poll() is None  # still waiting for the request
    gate.touch()
    assert in_flight.result() == (200, "gate opened")
    assert server.wait_exit(timeout=20) == 0, server.output
    assert "Drained; exiting" in server.output


@pytest.mark.parametrize("async_views", ["loop", "pool"])
def test_client_going_away_stops_the_async_generator(serve, tmp_path, async_views):
    server = serve("--asgi", "--async-views", async_views)
    marker = tmp_path / "stopped"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"GET /async/endless/?marker={marker} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        )
        read_until(sock, b"", b"chunk 3\n", 15)
    wait_until(marker.exists, 10, "the generator to stop", server)
    assert marker.read_text() in ("cancelled", "closed")
    # The request is over for the server too, and it goes on serving.
    samples = scrape_until(
        server,
        lambda s: value_of(s, "hurricane_http_requests_in_flight") == 0,
        "no request in flight",
    )
    assert value_of(samples, "hurricane_http_requests_in_flight") == 0
    assert requests.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"
    assert status(server.probe("/ready")) == 200
    assert server.process.poll() is None
    assert "Error running the ASGI application" not in server.output, server.output


# -- 8. a custom ASGI application ---------------------------------------------------------------


def test_client_going_away_cancels_an_awaiting_async_view(serve, tmp_path):
    server = serve("--asgi")
    entered, cancelled = tmp_path / "entered", tmp_path / "cancelled"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"GET /async/gate/?file={tmp_path / 'never'}&entered={entered}"
            f"&cancelled={cancelled} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        )
        wait_until(entered.exists, 15, "the async view to start", server)
    wait_until(cancelled.exists, 10, "the async view to be cancelled", server)
    scrape_until(
        server,
        lambda s: value_of(s, "hurricane_http_requests_in_flight") == 0,
        "no request in flight",
    )
    assert requests.get(server.url("/async/hello/"), timeout=10).text == "Hello from async"
    wait_for_log(server, r"200 GET /async/hello/")
    # A client that leaves is no error of the application.
    assert " ERROR " not in server.output, server.output


def test_custom_asgi_application_answers_every_request(serve):
    server = serve(env=asgi_settings(CUSTOM_APPLICATION))
    assert serving_mode(server) == "ASGI"
    for path, body in (("/hello/", "Hello from Hurricane"), ("/async/hello/", "Hello from async")):
        response = requests.get(server.url(path), timeout=10)
        assert response.status_code == 200
        assert response.text == body
        assert response.headers["X-ASGI-Middleware"] == "yes", path
    missing = requests.get(server.url("/no-such-page/"), timeout=10)
    assert missing.status_code == 404
    assert missing.headers["X-ASGI-Middleware"] == "yes"
    # Not the worker pool: Django runs the sync view off the loop by itself.
    assert not thread_of(server, "/meta/").startswith("hurricane-worker-")
    assert thread_of(server, "/async/thread/") == "MainThread"
    streamed = requests.get(server.url("/async/sync-stream/?count=3"), timeout=10)
    assert streamed.headers["X-ASGI-Middleware"] == "yes"
    assert streamed.text == "line 0\nline 1\nline 2\n"


# -- 9. keep-alive and pipelining ---------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    server = serve("--asgi")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.connect()
        sock = connection.sock
        for path, body in (
            ("/async/hello/", b"Hello from async"),
            ("/async/sleep/?seconds=0.1", b"slept 0.1"),
            ("/hello/", b"Hello from Hurricane"),
            ("/async/hello/", b"Hello from async"),
        ):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200
            assert response.read() == body
            assert not response.will_close
            assert connection.sock is sock, "the client had to reconnect"
    finally:
        connection.close()


def test_pipelined_requests_are_answered_in_order(serve):
    server = serve("--asgi")
    pipelined = (
        b"GET /async/sleep/?seconds=0.3 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /async/hello/ HTTP/1.1\r\nHost: localhost\r\n\r\n"
        b"GET /hello/ HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(pipelined)
        rest = b""
        bodies = []
        for _ in range(3):
            status_line, _, body, rest = read_response(sock, rest)
            assert status_line.startswith("HTTP/1.1 200"), status_line
            bodies.append(body)
    assert bodies == [b"slept 0.3", b"Hello from async", b"Hello from Hurricane"]
    assert rest == b""
