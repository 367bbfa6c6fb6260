"""One check of a response head for whole and streamed responses: each response of
testproject/raw_heads.py, sent by a WSGI and by an ASGI application, once whole and
once streamed, to GET and to HEAD, is read by a client over a real socket; the
client must see the same status, headers and body either way, and the connection
must serve the next request."""

from __future__ import annotations

import http.client
import json
import socket
import sys

import pytest
from test_http import read_responses

from conftest import TEST_PROJECT

sys.path.insert(0, str(TEST_PROJECT))
from testproject.raw_heads import BODY, CASES, WSGI_ONLY  # noqa: E402

# What each case gets the client (status, body of a GET). One case cannot be the same
# both ways: a streamed body is not known when its head goes out, so a Content-Length
# it does not match is found only at its end, and the connection is cut there.
EXPECTED = {
    "ok": 200,
    "no-reason": 200,
    "bad-name": 500,
    "crlf-in-value": 500,
    "control-in-value": 500,
    "beyond-latin-1": 500,
    "crlf-in-reason": 500,
    "no-code": 500,
    "two-digit-code": 500,
    "length-matches": 200,
    "length-mismatch": 500,
    "length-not-a-number": 500,
    "length-twice": 500,
    "204-with-body": 204,
    "304-with-body": 304,
    "transfer-encoding": 200,
    "own-date": 200,
    "connection": 200,
    "not-a-string": 500,
    "not-a-pair": 500,
}
STREAMED_DIFFERENTLY = {("GET", "length-mismatch")}
# How the body is framed differs by nature (Content-Length, or chunks), and so may
# whether the connection stays open; Date changes by the second.
FRAMING = {"content-length", "transfer-encoding", "date", "connection"}


def observe(port: int, method: str, case: str, stream: bool) -> tuple:
    """What a client sees of one response, and of the next request on the connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        query = f"case={case}" + ("&stream=1" if stream else "")
        try:
            connection.request(method, f"/raw-head/?{query}")
            response = connection.getresponse()
            seen: tuple = (
                response.status,
                sorted(
                    (name.lower(), value)
                    for name, value in response.getheaders()
                    if name.lower() not in FRAMING
                ),
                response.read(),
            )
        except Exception as error:  # noqa: BLE001  # what the client ran into is the result
            return (type(error).__name__, None, None, None)
        try:
            connection.request("GET", "/hello/")
            after = connection.getresponse()
            next_one = (after.status, after.read())
        except Exception as error:  # noqa: BLE001
            next_one = (type(error).__name__, None)
        return (*seen, next_one)
    finally:
        connection.close()


@pytest.mark.parametrize("container", ["wsgi", "asgi"])
def test_a_response_head_is_checked_alike_whole_and_streamed(serve, container):
    if container == "asgi":
        settings = {"ASGI_APPLICATION": "testproject.asgi.raw_heads"}
        server = serve("--asgi", env={"TEST_SETTINGS": json.dumps(settings)})
    else:
        server = serve(env={"TEST_WSGI_APPLICATION": "testproject.raw_wsgi.application"})
    assert set(EXPECTED) == set(CASES)
    hello = (200, b"Hello from Hurricane")
    differ, unexpected = {}, {}
    for method in ("GET", "HEAD"):
        for case, code in EXPECTED.items():
            if container == "asgi" and case in WSGI_ONLY:
                continue
            whole = observe(server.port, method, case, stream=False)
            streamed = observe(server.port, method, case, stream=True)
            if code == 500:
                body = b"Internal Server Error\n"
            elif code in (204, 304):
                body = b""
            else:
                body = BODY
            if method == "HEAD":
                code = 200 if case == "length-mismatch" else code  # no body to mismatch
                body = b""
            if (whole[0], whole[2], whole[3]) != (code, body, hello):
                unexpected[(method, case)] = whole
            if (method, case) in STREAMED_DIFFERENTLY:
                # The head went out with the wrong length; the body is cut off there.
                if streamed[0] != "IncompleteRead":
                    unexpected[(method, case, "streamed")] = streamed
            elif streamed != whole:
                differ[(method, case)] = {"whole": whole, "streamed": streamed}
    assert not unexpected, unexpected
    assert not differ, differ
    assert server.process.poll() is None


def answer_to(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        [(status_line, headers, body)] = read_responses(sock, ["GET"])
    return int(status_line.split()[1]), dict(headers), body


def test_the_servers_own_answers_are_built_alike(serve):
    """Whoever answers for the server (the request delegate, a refusal before the body
    is read, the sweep's 431 to a header block too large, Hurricane's Tornado
    handlers on the probe port, a 500 for a response HTTP cannot carry): one line of
    plain text, never cached, dated, framed by Content-Length."""
    server = serve(
        "--max-request-line",
        "128",
        "--max-headers",
        "5",
        "--max-header-size",
        "4096",
        "--max-body-size",
        "1024",
        env={"TEST_WSGI_APPLICATION": "testproject.raw_wsgi.application"},
    )
    many = "".join(f"X-{n}: 1\r\n" for n in range(10))
    answers = [
        (
            server.port,
            f"GET /{'a' * 200} HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            "Request line too long",
        ),
        (server.port, f"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n", 431, "Too many header fields"),
        (
            server.port,
            f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 8000}\r\n\r\n",
            431,
            "Request header fields too large",
        ),
        (
            server.port,
            "POST /echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + "c" * 2000,
            413,
            "Request body too large",
        ),
        (
            server.port,
            "GET /raw-head/?case=bad-name HTTP/1.1\r\nHost: x\r\n\r\n",
            500,
            "Internal Server Error",
        ),
        (server.probe_port, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, "Not Found"),
        (
            server.probe_port,
            "POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + "d" * 5000,
            413,
            "This URL takes no request body",
        ),
    ]
    for port, request, code, message in answers:
        status, headers, body = answer_to(port, request.encode("latin-1"))
        assert (status, body) == (code, message.encode() + b"\n"), (request[:40], status, body)
        assert headers["content-type"] == "text/plain; charset=utf-8", headers
        assert headers["cache-control"] == "no-store", headers
        assert "date" in headers, headers
        assert "server" not in headers, headers
