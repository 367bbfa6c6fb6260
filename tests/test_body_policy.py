"""One body policy for every server Hurricane runs: the app takes a body up to
``--max-body-size`` (tests/test_http.py); the probes, ``/metrics`` and the static
and media files take none. A body sent to them is answered from the headers, is
never read into memory, and the connection closes."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from conftest import consumer_args, free_port, wait_until

# What the review sent: just under Tornado's own 100 MB limit, which these servers
# used to read whole into memory before any handler ran.
LARGE = 95 * 1024 * 1024
# What the server's memory peak may grow by while refusing a large body (it grew by
# the body's size, once per concurrent request, before the policy).
GROWTH_BOUND_MB = 30


def memory_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status_file:
        return int(status_file.read().split("VmHWM:")[1].split()[0]) / 1024


def send_unwanted_body(port: int, method: str, path: str, size: int = LARGE) -> tuple[str, str]:
    """Announce a body of ``size`` bytes and send it as fast as the server takes it,
    while reading its answer. Returns the answer's status line and head, once the
    server has closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n"
    sock.sendall(head.encode())

    def send_body() -> None:
        piece = b"x" * (1024 * 1024)
        sent = 0
        try:
            while sent < size:
                sock.sendall(piece[: size - sent])
                sent += len(piece)
        except OSError:  # the server answered and closed: what the test expects
            pass

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    answer = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except ConnectionResetError:  # closed with unread body bytes: after its answer
        pass
    sender.join(30)
    sock.close()
    text = answer.decode("latin-1")
    assert "\r\n\r\n" in text, f"no complete answer to {method} {path}: {answer[:200]!r}"
    status_line, _, rest = text.partition("\r\n")
    return status_line, rest.partition("\r\n\r\n")[0]


def refuses_bodies(port: int, pid: int, targets: list[tuple[str, str, int]]) -> None:
    """Each (method, path, status) target answers ``status`` to a 95 MB body, closes
    the connection, and the server's memory peak barely moves."""
    before = memory_peak_mb(pid)
    for method, path, expected in targets:
        status_line, head = send_unwanted_body(port, method, path)
        assert status_line.startswith(f"HTTP/1.1 {expected} "), (method, path, status_line)
        assert "Connection: close" in head, head
        assert "Server:" not in head, head
    grown = memory_peak_mb(pid) - before
    assert grown < GROWTH_BOUND_MB, f"memory peak grew by {grown:.0f} MB"


def test_files_and_probes_of_serve_take_no_body(serve, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "x.txt").write_text("a file\n")
    server = serve("--static", "--media", "--command", "collectstatic --noinput")
    refuses_bodies(
        server.port,
        server.process.pid,
        [
            ("POST", "/static/testapp/app.css", 405),
            ("POST", "/media/x.txt", 405),
            ("PUT", "/media/x.txt", 405),
            ("GET", "/media/x.txt", 413),
        ],
    )
    refuses_bodies(
        server.probe_port,
        server.process.pid,
        [("POST", "/ready", 413), ("POST", "/metrics", 413), ("GET", "/alive", 413)],
    )
    # The same requests without a body are served as before.
    assert requests.post(server.probe("/ready"), timeout=10).status_code == 200
    assert requests.get(server.url("/media/x.txt"), timeout=10).text == "a file\n"
    method_not_allowed = requests.post(server.url("/media/x.txt"), timeout=10)
    assert method_not_allowed.status_code == 405
    # A refused file request is in the access log, as the app's own 413s are.
    wait_until(lambda: "405 POST /media/x.txt" in server.output, 10, "the access log line")
    assert "Traceback" not in server.output, server.output


def test_a_few_bytes_of_body_are_read_and_ignored(serve):
    """Up to 4 KiB (django-hurricane 1.6's test client POSTs "null" to the probes):
    answered as without a body; 4 KiB and one byte: refused."""
    server = serve()
    for size, expected in ((4, 200), (4096, 200), (4097, 413)):
        response = requests.post(server.probe("/ready"), data=b"n" * size, timeout=10)
        assert response.status_code == expected, size


def test_a_405_names_the_methods_a_file_takes(serve):
    server = serve("--static", "--command", "collectstatic --noinput")
    status_line, head = send_unwanted_body(server.port, "DELETE", "/static/x", size=5000)
    assert status_line == "HTTP/1.1 405 Method Not Allowed"
    assert "Allow: GET, HEAD" in head, head


def test_probes_on_the_app_port_take_no_body(serve):
    port = free_port()
    server = serve("--port", str(port), "--probe-port", str(port))
    refuses_bodies(server.port, server.process.pid, [("POST", "/ready", 413)])
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_a_chunked_body_to_a_probe_is_refused_unread(serve):
    server = serve()
    sock = socket.create_connection(("127.0.0.1", server.probe_port), timeout=10)
    sock.sendall(b"POST /ready HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413 "), answer
    sock.settimeout(10)
    assert sock.recv(65536) == b""  # closed, not waiting for the chunks
    sock.close()


def test_the_consumers_probe_port_takes_no_body(consume, broker):
    process = consume(*consumer_args(broker.names()))
    wait_until(lambda: requests.get(process.probe("/ready"), timeout=2).status_code == 200)
    refuses_bodies(
        process.probe_port,
        process.process.pid,
        [("POST", "/ready", 413), ("POST", "/ready", 413)],
    )
    assert requests.get(process.probe("/ready"), timeout=10).status_code == 200


@pytest.mark.parametrize("target", ["/ready", "/nowhere"])
def test_hurricanes_own_answers_do_not_name_the_server(serve, target):
    server = serve("--static", "--command", "collectstatic --noinput")
    for url in (
        server.probe(target),
        server.probe("/metrics"),
        server.url("/static/testapp/app.css"),
        server.url("/static/missing.css"),
    ):
        response = requests.get(url, timeout=10)
        assert "Server" not in response.headers, (url, response.headers)
