"""What a client of ``manage.py serve`` observes over real sockets: the WSGI pool,
streaming, body limits, static and media files, probes, debuggers and autoreload."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
import requests

from conftest import TEST_PROJECT, free_port, port_open, status, wait_until

CSS = TEST_PROJECT / "testapp" / "static" / "testapp" / "app.css"
VIEWS = TEST_PROJECT / "testapp" / "views.py"


# -- helpers --------


# The test project on the ASGI path, through Django's own ASGI handler.
ASGI_DJANGO = {"ASGI_APPLICATION": "testproject.asgi.application"}


def read_until(sock: socket.socket, buffer: bytes, marker: bytes, timeout: float) -> bytes:
    """Read from ``sock`` until ``marker`` is in what was read; returns everything read."""
    deadline = time.monotonic() + timeout
    while marker not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{marker!r} did not arrive; got {buffer!r}")
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed before {marker!r}; got {buffer!r}")
        buffer += data
    return buffer


def wait_for_log(server, pattern: str, timeout: float = 10.0) -> None:
    wait_until(lambda: re.search(pattern, server.output), timeout, f"log line /{pattern}/", server)


def read_responses(sock: socket.socket, methods: list[str], timeout: float = 10.0) -> list:
    """Reads one response per request method from ``sock``, framed as a client frames
    them: by Content-Length, and no body after HEAD. Each is (status line, header lines
    as (lower-case name, value) pairs, body)."""
    buffer, responses = b"", []
    for method in methods:
        buffer = read_until(sock, buffer, b"\r\n\r\n", timeout)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = [(name.lower(), value) for name, _, value in (x.partition(": ") for x in lines)]
        lengths = [value for name, value in headers if name == "content-length"]
        assert len(lengths) == 1, head
        size = 0 if method == "HEAD" else int(lengths[0])
        sock.settimeout(timeout)
        while len(buffer) < size:
            data = sock.recv(65536)
            assert data, f"connection closed in a body; got {buffer!r}"
            buffer += data
        responses.append((status_line, headers, buffer[:size]))
        buffer = buffer[size:]
    assert buffer == b"", buffer
    return responses


def names(headers: list) -> list[str]:
    return [name for name, _ in headers]


# -- 1. the WSGI pool --------


def test_workers_bound_concurrency(serve, tmp_path):
    server = serve("--workers", "2", "--max-workers", "2")
    with concurrent.futures.ThreadPoolExecutor(6) as executor:
        began = time.monotonic()
        slow = list(
            executor.map(
                lambda _: requests.get(server.url("/slow/?seconds=1"), timeout=30), range(4)
            )
        )
        elapsed = time.monotonic() - began
        assert [r.status_code for r in slow] == [200] * 4
        # Two workers: four one-second requests need at least two rounds.
        assert elapsed >= 1.9, elapsed

        gate = tmp_path / "open-workers"
        held = [
            executor.submit(requests.get, server.url(f"/gate/?file={gate}"), timeout=40)
            for _ in range(6)
        ]
        time.sleep(0.5)
        gate.touch()
        responses = [future.result() for future in held]
    assert [r.status_code for r in responses] == [200] * 6
    names = {r.text for r in responses}
    assert 1 <= len(names) <= 2, names


def test_event_loop_from_each_source(serve):
    """uvloop by default (it comes with Hurricane); asyncio's own loop from the command
    line or the environment. Each serves keep-alive requests and streams."""
    default = serve(migrate=False, wait=False)
    from_command_line = serve("--loop", "asyncio", migrate=False, wait=False)
    from_environment = serve(env={"HURRICANE_LOOP": "asyncio"}, migrate=False, wait=False)
    for server, loop in (
        (default, "uvloop"),
        (from_command_line, "asyncio"),
        (from_environment, "asyncio"),
    ):
        server.wait_started()
        started = rf"Serving on port \d+ \(WSGI; \d+ workers; {loop}(; CPU \d+)?\)"
        assert re.search(started, server.output), server.output
        with requests.Session() as session:
            for _ in range(3):
                assert session.get(server.url("/hello/"), timeout=10).status_code == 200
            streamed = session.get(server.url("/stream/"), timeout=10)
            assert streamed.status_code == 200 and streamed.content, streamed.content


def test_readiness_follows_requests_waiting_for_a_worker(serve, tmp_path):
    server = serve("--workers", "1", "--max-workers", "1", "--req-queue-len", "2")
    assert status(server.probe("/ready")) == 200
    gate = tmp_path / "open-ready"
    with concurrent.futures.ThreadPoolExecutor(3) as executor:
        held = [
            executor.submit(requests.get, server.url(f"/gate/?file={gate}"), timeout=40)
            for _ in range(3)
        ]
        # One request runs, two wait for the worker: the backlog reaches the limit.
        wait_until(
            lambda: status(server.probe("/ready")) == 400,
            20,
            "readiness to fail while requests wait",
            server,
        )
        not_ready = requests.get(server.probe("/ready"), timeout=10)
        assert not_ready.status_code == 400
        assert not_ready.headers["Cache-Control"] == "no-store"
        assert status(server.probe("/alive")) == 200
        gate.touch()
        assert [future.result().status_code for future in held] == [200] * 3
    wait_until(
        lambda: status(server.probe("/ready")) == 200,
        20,
        "readiness to recover once the backlog drained",
        server,
    )


def test_idle_keep_alive_connections_are_not_backlog(serve):
    server = serve("--workers", "1", "--req-queue-len", "2")
    connections = []
    try:
        for _ in range(30):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("GET", "/hello/")
            response = connection.getresponse()
            assert response.status == 200
            assert response.read() == b"Hello from Hurricane"
            assert not response.will_close  # the connection stays open, idle
            connections.append(connection)
        for _ in range(3):
            ready = requests.get(server.probe("/ready"), timeout=10)
            assert ready.status_code == 200, ready.text
        assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
        # The idle connections are still usable.
        connections[0].request("GET", "/hello/")
        assert connections[0].getresponse().read() == b"Hello from Hurricane"
    finally:
        for connection in connections:
            connection.close()


# -- 2. streaming, files, HEAD, errors --------


def test_streaming_response_is_sent_as_produced(serve, tmp_path):
    server = serve()
    gate = tmp_path / "open-stream"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /stream/?gate={gate} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        received = read_until(sock, b"", b"first chunk", 15)
        assert received.startswith(b"HTTP/1.1 200")
        # The view is still waiting for the gate, so the first chunk was not buffered.
        assert not gate.exists()
        assert b"second chunk" not in received
        gate.touch()
        received = read_until(sock, received, b"second chunk", 15)
        if b"Transfer-Encoding: chunked" in received:
            read_until(sock, received, b"\r\n0\r\n\r\n", 15)


def test_file_response_head_and_errors(serve):
    server = serve()
    response = requests.get(server.url("/file/"), timeout=10)
    assert response.status_code == 200
    assert response.content == VIEWS.read_bytes()
    assert response.headers["Content-Type"] == "text/x-python"

    # HEAD: headers without a body; the next request on the same connection proves no
    # stray body bytes were sent.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for path, length in (
            ("/hello/", len("Hello from Hurricane")),
            ("/file/", len(VIEWS.read_bytes())),
        ):
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert head.status == 200
            assert int(head.getheader("Content-Length")) == length
            assert head.read() == b""
            connection.request("GET", "/hello/")
            after = connection.getresponse()
            assert after.status == 200
            assert after.read() == b"Hello from Hurricane"
    finally:
        connection.close()

    assert status(server.url("/error/")) == 500
    assert status(server.url("/stream-error/")) == 500
    assert requests.get(server.url("/hello/"), timeout=10).text == "Hello from Hurricane"
    assert server.process.poll() is None
    wait_for_log(server, r"500 GET /error/")


def test_a_response_http_cannot_carry_gets_500_not_a_hang(serve):
    """A header name with a space, a control character in a value, or a line break in
    the reason phrase cannot go on the wire: the client gets a 500 at once (it used to
    wait for a response that never came), the log says which header, and the
    connection serves on."""
    server = serve()
    queries = ("name=1", "value=1", "status=1", "name=1&stream=1", "status=1&stream=1")
    with requests.Session() as session:
        for query in queries:
            response = session.get(server.url(f"/bad-header/?{query}"), timeout=10)
            assert (response.status_code, response.text) == (500, "Internal Server Error\n")
            assert not {"Bad Name", "X-Bad-Value", "X-Injected"} & set(response.headers)
            hello = session.get(server.url("/hello/"), timeout=10)
            assert hello.text == "Hello from Hurricane"
    wait_for_log(
        server,
        r"Answered 500 to GET /bad-header/\?name=1 instead of the application's response: "
        r"invalid header name 'Bad Name'",
    )
    wait_for_log(server, r"invalid value of header X-Bad-Value: 'a\\x01b'")
    wait_for_log(server, r"invalid status '200 OK\\r\\nX-Injected: 1'")
    assert server.process.poll() is None


def test_a_status_that_is_not_a_number_gets_500(serve):
    """A WSGI application of the project's own (WSGI_APPLICATION) may start a response
    with any string: one without a status code gets the client a 500, as a bad header
    does, and the connection serves on."""
    server = serve(env={"TEST_WSGI_APPLICATION": "testproject.raw_wsgi.application"})
    with requests.Session() as session:
        response = session.get(server.url("/raw-status/"), timeout=10)
        assert (response.status_code, response.text) == (500, "Internal Server Error\n")
        assert session.get(server.url("/hello/"), timeout=10).text == "Hello from Hurricane"
    wait_for_log(server, r"Answered 500 to GET /raw-status/ .*: invalid status 'OK'")


def test_whole_responses_on_the_wire(serve):
    """Pipelined requests on one connection, read as a client reads them: each response
    has one Content-Length that frames its body, one Date, a line per cookie; HEAD has
    the GET's length and no body; "Connection: close" is answered in kind and the
    connection closes. An HTTP/1.0 request gets its response and the connection closes."""
    server = serve()
    requests_sent = [
        ("GET", "/hello/", ""),
        ("HEAD", "/hello/", ""),
        ("GET", "/cookies/", ""),
        ("GET", "/hello/", "Connection: close\r\n"),
    ]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"".join(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
                for method, path, extra in requests_sent
            )
        )
        responses = read_responses(sock, [method for method, _, _ in requests_sent])
        assert sock.recv(1) == b""  # closed after the last
    (get, get_headers, get_body), (head, head_headers, head_body) = responses[:2]
    assert (get, get_body) == ("HTTP/1.1 200 OK", b"Hello from Hurricane")
    assert (head, head_body) == ("HTTP/1.1 200 OK", b"")
    assert dict(head_headers)["content-length"] == str(len(get_body))
    for _, headers, _ in responses:
        assert names(headers).count("date") == 1, headers
        assert "transfer-encoding" not in names(headers)
    cookies = [value for name, value in responses[2][1] if name == "set-cookie"]
    assert [cookie.split(";")[0].strip() for cookie in cookies] == ["first=1", "second=2"]
    assert ("connection", "close") in responses[3][1]
    assert "connection" not in names(get_headers)

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /hello/ HTTP/1.0\r\nHost: x\r\n\r\n")
        [(status_line, _, body)] = read_responses(sock, ["GET"])
        assert (status_line, body) == ("HTTP/1.1 200 OK", b"Hello from Hurricane")
        assert sock.recv(1) == b""


@pytest.mark.parametrize("path_kind", ["wsgi", "asgi"])
def test_an_absolute_form_target_is_served_by_its_path(serve, path_kind):
    """HTTP/1.1 servers must accept ``GET http://host/path`` (what clients send to a
    forward proxy): Django sees the path and the query, and checks the Host header."""
    if path_kind == "asgi":
        server = serve("--asgi", env={"TEST_SETTINGS": json.dumps(ASGI_DJANGO)})
    else:
        server = serve()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "http://example.com:8080/meta/?a=1", headers={"Host": "x"})
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 200
        if path_kind == "wsgi":
            assert (body["path"], body["query"]) == ("/meta/", {"a": "1"})
        connection.request("GET", "HTTPS://x/async/hello/")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"Hello from async")
    finally:
        connection.close()


def test_a_raw_wsgi_applications_headers(serve):
    """Header names in any case are the same header: an application's own lower-case
    content-length and date are not doubled. A Content-Length the body does not match
    (the client would wait for bytes that never come), a value beyond Latin-1 (which
    HTTP/1.1 cannot carry) and a line break in a value get a 500 and a log line naming
    them, and the connection serves on."""
    server = serve(env={"TEST_WSGI_APPLICATION": "testproject.raw_wsgi.application"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /raw-headers/?case=lower HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status_line, headers, body)] = read_responses(sock, ["GET"])
    assert (status_line, body) == ("HTTP/1.1 200 OK", b"raw\n")
    assert sorted(names(headers)) == ["content-length", "content-type", "date", "x-name"]
    assert ("date", "Mon, 01 Jan 2024 00:00:00 GMT") in headers
    assert ("x-name", "Zo\u00eb") in headers  # Latin-1 on the wire
    with requests.Session() as session:
        for case in ("length", "latin-1", "crlf"):
            response = session.get(server.url(f"/raw-headers/?case={case}"), timeout=10)
            assert (response.status_code, response.text) == (500, "Internal Server Error\n")
            assert "X-Injected" not in response.headers
            assert session.get(server.url("/hello/"), timeout=10).text == "Hello from Hurricane"
    wait_for_log(
        server, r"GET /raw-headers/\?case=length .*: Content-Length '99' is not the length"
    )
    wait_for_log(server, r"invalid value of header X-Name: 'Zo\u00eb \u2713'")
    wait_for_log(server, r"invalid value of header X-Note: 'a\\r\\nX-Injected: 1'")
    assert "Traceback" not in server.output, server.output


# -- 3. body limits --------


def chunks(count: int, size: int = 1000):
    for _ in range(count):
        yield b"c" * size


def test_bodies_within_max_body_size_pass(serve):
    server = serve("--max-body-size", "1024")
    small = requests.post(server.url("/echo/"), data=b"a" * 1000, timeout=10)
    assert small.status_code == 200
    assert small.json()["length"] == 1000
    small_chunked = requests.post(server.url("/echo/"), data=chunks(3, 100), timeout=10)
    assert small_chunked.status_code == 200
    assert small_chunked.json()["length"] == 300


def test_announced_body_over_max_body_size_gets_413(serve):
    server = serve("--max-body-size", "1024")
    too_big = requests.post(server.url("/echo/"), data=b"b" * 5000, timeout=10)
    assert too_big.status_code == 413
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert server.process.poll() is None
    wait_for_log(server, r"413 POST /echo/")
    assert "Traceback" not in server.output, server.output


def test_chunked_body_over_max_body_size_is_refused(serve):
    server = serve("--max-body-size", "1024")
    try:
        chunked = requests.post(server.url("/echo/"), data=chunks(20), timeout=10)
    except requests.ConnectionError:
        pass  # the server closed the connection while the body was still coming
    else:
        assert chunked.status_code == 413
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.output, server.output
    assert "200 POST /echo/" not in server.output


def test_max_body_size_with_unit(serve):
    server = serve("--max-body-size", "1k")
    fits = requests.post(server.url("/echo/"), data=b"a" * 1024, timeout=10)
    assert fits.status_code == 200
    assert fits.json()["length"] == 1024
    assert requests.post(server.url("/echo/"), data=b"a" * 1025, timeout=10).status_code == 413
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def memory_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status_file:
        return int(status_file.read().split("VmHWM:")[1].split()[0]) / 1024


def temporary_files_open(pid: int) -> list[str]:
    """The unnamed temporary files the process holds (their links read "(deleted)")."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return [link for link in links if link.endswith("(deleted)")]


@pytest.mark.parametrize("view", ["/upload/", "/async/upload/"])
def test_large_bodies_wait_on_disk_not_in_memory(serve, view):
    """Four concurrent 30 MB uploads, announced and chunked, on the WSGI and the ASGI
    path: every byte reaches the view, the server's memory peak grows by far less
    than one body (held in memory they took it past 200 MB), and once answered no
    temporary file stays open."""
    if view.startswith("/async/"):
        server = serve("--asgi", env={"TEST_SETTINGS": json.dumps(ASGI_DJANGO)})
    else:
        server = serve()
    size, piece = 30 * 1024 * 1024, 1024 * 1024
    bodies = [bytes([65 + n]) * size for n in range(4)]
    assert requests.post(server.url(view), data=b"warm", timeout=10).json()["length"] == 4
    before = memory_peak_mb(server.process.pid)

    def upload(n: int) -> dict:
        body = bodies[n]
        # Even ones chunked (no Content-Length), odd ones announced.
        data = body if n % 2 else (body[at : at + piece] for at in range(0, size, piece))
        response = requests.post(server.url(view), data=data, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(upload, range(4)))
    assert answers == [
        {"length": size, "sha256": hashlib.sha256(body).hexdigest()} for body in bodies
    ]
    assert memory_peak_mb(server.process.pid) - before < 20, server.output
    wait_until(lambda: not temporary_files_open(server.process.pid), 5, "the files closed", server)


def test_a_body_that_cannot_be_stored_gets_503_and_one_line(serve, tmp_path):
    """The spool directory gone (Django's checks refuse to start without it; here it
    vanishes later): a large body gets 503 and an error line naming the directory,
    small ones are served on."""
    spool = tmp_path / "spool"
    spool.mkdir()
    settings = {"FILE_UPLOAD_TEMP_DIR": str(spool), "FILE_UPLOAD_MAX_MEMORY_SIZE": 1000}
    server = serve(env={"TEST_SETTINGS": json.dumps(settings)})
    spool.rmdir()
    refused = requests.post(server.url("/upload/"), data=b"a" * 5000, timeout=10)
    assert (refused.status_code, refused.text) == (503, "Request body could not be stored\n")
    small = requests.post(server.url("/upload/"), data=b"a" * 1000, timeout=10)
    assert (small.status_code, small.json()["length"]) == (200, 1000)
    wait_for_log(
        server,
        r"Answered 503 to POST /upload/: its body \(\d+ bytes so far\) could not be stored "
        rf"in {re.escape(str(spool))}: \[Errno 2\]",
    )
    assert "Traceback" not in server.output, server.output


# -- 4. static and media files --------


def test_static_serves_collected_files(serve, tmp_path):
    server = serve("--static", "--command", "collectstatic --noinput")
    assert (tmp_path / "static" / "testapp" / "app.css").exists()
    response = requests.get(server.url("/static/testapp/app.css"), timeout=10)
    assert response.status_code == 200
    assert response.content == CSS.read_bytes()
    assert status(server.url("/static/testapp/missing.css")) == 404
    assert status(server.url("/media/anything.txt")) == 404
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_static_with_debug_uses_the_finders(serve, tmp_path):
    server = serve("--static", env={"TEST_DEBUG": "1"})
    response = requests.get(server.url("/static/testapp/app.css"), timeout=10)
    assert response.status_code == 200
    assert response.content == CSS.read_bytes()
    assert not (tmp_path / "static").exists()  # nothing was collected


def test_media_serves_media_root(serve, tmp_path):
    media = tmp_path / "media" / "docs"
    media.mkdir(parents=True)
    (media / "note.txt").write_text("uploaded by a user\n")
    server = serve("--media")
    response = requests.get(server.url("/media/docs/note.txt"), timeout=10)
    assert response.status_code == 200
    assert response.text == "uploaded by a user\n"
    assert status(server.url("/media/docs/missing.txt")) == 404
    assert status(server.url("/static/testapp/app.css")) == 404


def test_static_and_media_are_not_served_without_the_flags(serve, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "note.txt").write_text("private\n")
    server = serve("--command", "collectstatic --noinput")
    assert (tmp_path / "static" / "testapp" / "app.css").exists()
    assert status(server.url("/static/testapp/app.css")) == 404
    assert status(server.url("/media/note.txt")) == 404
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def raw_get(port: int, target: str) -> tuple[str, str]:
    """GET ``target`` as written (no client normalises it); the status line and head."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = read_until(sock, b"", b"\r\n\r\n", 10).decode("latin-1")
    status_line, _, rest = answer.partition("\r\n")
    return status_line, rest.partition("\r\n\r\n")[0]


def test_files_are_served_with_the_protections_of_djangos_own_responses(serve, tmp_path):
    """nosniff on every file; user uploads that a browser would run (HTML, SVG, XML)
    sandboxed, others not; hidden files, folders, paths outside the root and paths
    with a NUL all answer the same 404, with no traceback."""
    media = tmp_path / "media"
    (media / ".git").mkdir(parents=True)
    (media / ".git" / "config").write_text("[core]\n")
    (media / ".env").write_text("SECRET=1\n")
    (media / "photos").mkdir()
    (tmp_path / "outside.txt").write_text("not served\n")
    uploads = {
        "page.html": "<script>alert(1)</script>",
        "image.svg": "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        "feed.xml": "<x/>",
        "notes.txt": "text\n",
        "photo.png": "\x89PNG",
    }
    for name, content in uploads.items():
        (media / name).write_text(content)
    server = serve("--static", "--media", "--command", "collectstatic --noinput")

    for name in uploads:
        response = requests.get(server.url(f"/media/{name}"), timeout=10)
        assert response.status_code == 200, name
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        sandboxed = response.headers.get("Content-Security-Policy") == "sandbox"
        assert sandboxed == name.endswith((".html", ".svg", ".xml")), (name, response.headers)
    static = requests.get(server.url("/static/testapp/app.css"), timeout=10)
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in static.headers  # the project's own files

    for target in (
        "/media/.env",
        "/media/.git/config",
        "/media/photos",
        "/media/photos/",
        "/media/missing.txt",
        "/media/../outside.txt",
        "/media/%2e%2e/outside.txt",
        "/media/notes.txt%00.png",
        "/static/%00",
    ):
        status_line, head = raw_get(server.port, target)
        assert status_line == "HTTP/1.1 404 Not Found", (target, status_line)
        assert "Server:" not in head, head
    assert "Traceback" not in server.output, server.output


# -- 5. probes --------


def test_custom_probe_and_metrics_paths(serve):
    server = serve(
        "--startup-probe",
        "/s",
        "--readiness-probe",
        "ready/",
        "--liveness-probe",
        "/live/",
        "--metrics",
        "/prom",
        wait=False,
    )
    wait_until(lambda: status(server.probe("/s")) == 200, 30, "the custom startup probe", server)
    for path in ("/s", "/s/", "/ready", "/ready/", "/live", "/live/"):
        response = requests.get(server.probe(path), timeout=10)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["Cache-Control"] == "no-store"
    for path in ("/startup", "/alive", "/metrics"):
        assert status(server.probe(path)) == 404, path
    metrics = requests.get(server.probe("/prom"), timeout=10)
    assert metrics.status_code == 200
    assert "request_counter" in metrics.text
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_probes_on_the_app_port(serve):
    port = free_port()
    server = serve("--port", str(port), "--probe-port", str(port))
    assert requests.get(server.url("/hello/"), timeout=10).text == "Hello from Hurricane"
    for path in ("/startup", "/ready", "/alive/", "/metrics"):
        assert status(server.url(path)) == 200, path
    assert not port_open(port + 1)


def test_no_metrics(serve):
    server = serve("--no-metrics")
    assert status(server.probe("/metrics")) == 404
    assert status(server.probe("/ready")) == 200
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_failing_checks_fail_the_right_probe(serve, tmp_path):
    live_flag = tmp_path / "liveness-fails"
    ready_flag = tmp_path / "readiness-fails"
    server = serve(
        env={"TEST_LIVENESS_FAIL_FLAG": str(live_flag), "TEST_READINESS_FAIL_FLAG": str(ready_flag)}
    )
    assert status(server.probe("/alive")) == 200
    assert status(server.probe("/ready")) == 200

    live_flag.touch()
    alive = requests.get(server.probe("/alive"), timeout=10)
    assert alive.status_code == 500
    assert "liveness flag file exists" in alive.text
    assert status(server.probe("/ready")) == 200
    live_flag.unlink()
    assert status(server.probe("/alive")) == 200

    ready_flag.touch()
    ready = requests.get(server.probe("/ready"), timeout=10)
    assert ready.status_code == 400
    assert "readiness flag file exists" in ready.text
    assert status(server.probe("/alive")) == 200
    ready_flag.unlink()
    assert status(server.probe("/ready")) == 200


def test_access_log_leaves_out_probes(serve):
    server = serve()
    for path in ("/ready", "/alive", "/startup"):
        assert status(server.probe(path)) == 200
    assert status(server.url("/hello/")) == 200
    assert status(server.url("/no-such-page/")) == 404
    assert status(server.url("/echo/"), "POST", data=b"x") == 200
    wait_for_log(server, r"200 GET /hello/ \(127\.0\.0\.1\) \d+(\.\d+)?ms")
    wait_for_log(server, r"404 GET /no-such-page/ .*\d+(\.\d+)?ms")
    wait_for_log(server, r"200 POST /echo/ .*\d+(\.\d+)?ms")
    output = server.output
    for path in ("/ready", "/alive", "/startup"):
        assert f"GET {path}" not in output, output


def test_access_log_with_log_probes(serve):
    server = serve(env={"TEST_LOG_PROBES": "1"})
    assert status(server.probe("/ready")) == 200
    assert status(server.probe("/alive")) == 200
    assert status(server.url("/hello/")) == 200
    wait_for_log(server, r"200 GET /ready")
    wait_for_log(server, r"200 GET /alive")
    wait_for_log(server, r"200 GET /hello/")


# -- 6. debuggers --------


def test_debugpy_listens_on_the_debugger_port(serve):
    debugger_port = free_port()
    server = serve("--debugger", "--debugger-port", str(debugger_port))
    wait_until(lambda: port_open(debugger_port), 20, "debugpy to listen", server)
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_pycharm_without_its_package_names_the_extra(serve, tmp_path):
    pycharm_port = free_port()
    # The test tools install pydevd-pycharm: a module of that name first on the path
    # that fails to import stands for a project without it.
    missing = tmp_path / "without-pydevd"
    missing.mkdir()
    (missing / "pydevd_pycharm.py").write_text("raise ImportError('not installed')\n")
    path = f"{missing}{os.pathsep}{TEST_PROJECT.parent.parent}"
    server = serve(
        "--pycharm-host", "127.0.0.1", "--pycharm-port", str(pycharm_port),
        wait=False, env={"PYTHONPATH": path},
    )  # fmt: skip
    assert server.wait_exit(30) != 0
    # The banner, then one line that says what to install.
    banner, *lines = [line for line in server.output.splitlines() if line.strip()]
    assert "Tornado-powered Django web server" in banner
    assert len(lines) == 1, server.output
    assert "django-hurricane[pycharm]" in lines[0]
    assert not port_open(server.port)
    assert not port_open(server.probe_port)


# -- 7. autoreload and --static-watch --------


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(
        TEST_PROJECT,
        project,
        ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles", "media"),
    )
    return project


def serve_with_static_watch(serve, tmp_path: Path):
    sources = tmp_path / "assets"
    sources.mkdir()
    (sources / "base.css").write_text("p { margin: 0; }\n")
    server = serve(
        "--autoreload",
        "--static-watch",
        str(sources),
        cwd=copy_project(tmp_path),
        env={"TEST_SETTINGS": json.dumps({"STATICFILES_DIRS": [str(sources)]})},
    )
    assert requests.get(server.url("/hello/"), timeout=10).text == "Hello from Hurricane"
    wait_for_log(server, "Serving on port")
    # Let the reloader take its first look at the files (it polls about once a second).
    time.sleep(2.5)
    return server, sources


def test_autoreload_restarts_on_code_change(serve, tmp_path):
    server, _ = serve_with_static_watch(serve, tmp_path)
    views = tmp_path / "project" / "testapp" / "views.py"
    views.write_text(views.read_text().replace('"Hello from Hurricane"', '"Hello, reloaded"'))
    wait_until(
        lambda: requests.get(server.url("/hello/"), timeout=2).text == "Hello, reloaded",
        30,
        "the restarted server to serve the new code",
        server,
    )
    assert server.output.count("Serving on port") >= 2, server.output
    assert server.process.poll() is None


def test_static_watch_collects_a_new_file_without_restart(serve, tmp_path):
    server, sources = serve_with_static_watch(serve, tmp_path)
    static_root = tmp_path / "static"
    (sources / "added.css").write_text("h1 { color: red; }\n")
    wait_until(
        lambda: (static_root / "added.css").exists(),
        20,
        "the new static file to be collected",
        server,
    )
    assert (static_root / "added.css").read_text() == "h1 { color: red; }\n"
    assert server.output.count("Serving on port") == 1, server.output
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200
