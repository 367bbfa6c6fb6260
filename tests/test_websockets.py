"""WebSockets and the lifespan protocol on the native ASGI path, over real sockets:
the ``websockets`` client for what a well-behaved client sees, a raw socket for the
handshakes and frames a hostile one sends. The application is
``tests/testproject/testproject/ws_apps.py``; it prints what it hears of each
connection's end and of the lifespan, which the tests read in the server's output."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import websockets
from test_http import read_until, wait_for_log
from test_metrics_webhooks import scrape_until, value_of

from conftest import TEST_PROJECT, ServeProcess, base_env, free_port, run_serve, wait_until

WS_APP = json.dumps({"ASGI_APPLICATION": "testproject.ws_apps.application"})
KEY = base64.b64encode(b"0123456789abcdef").decode()
MAX_MESSAGE = 65536


def ws_env(**extra: str) -> dict[str, str]:
    return {"TEST_SETTINGS": WS_APP, **extra}


def start_server(tmp_path: Path, *args: str, **env: str) -> ServeProcess:
    full_env = base_env(tmp_path, **ws_env(**env))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=TEST_PROJECT, env=full_env, check=True
    )
    port = free_port()
    process = ServeProcess(
        ["--port", str(port), "--cpu-affinity", "off", *args],
        full_env,
        TEST_PROJECT,
        tmp_path / f"serve-{port}.log",
        port,
        port + 1,
    )
    return process.wait_started()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the protocol tests: a small message limit, and X-Forwarded-*
    believed from this machine."""
    process = start_server(
        tmp_path_factory.mktemp("ws"),
        "--ws-max-message-size",
        str(MAX_MESSAGE),
        "--forwarded-allow-ips",
        "127.0.0.1",
    )
    yield process
    process.kill()


def ws_url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


# -- raw frames ------------------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` announces another length than the payload's."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload) if length is None else length
    if size < 126:
        header = bytes([first, 0x80 | size])
    elif size < 65536:
        header = bytes([first, 0x80 | 126]) + struct.pack("!H", size)
    else:
        header = bytes([first, 0x80 | 127]) + struct.pack("!Q", size)
    mask = b"\x11\x22\x33\x44"
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def read_exactly(sock: socket.socket, buffer: bytearray, size: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while len(buffer) < size:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{size} bytes did not arrive; got {bytes(buffer)!r}"
        sock.settimeout(remaining)
        data = sock.recv(65536)
        assert data, f"connection closed after {bytes(buffer)!r}"
        buffer += data
    taken = bytes(buffer[:size])
    del buffer[:size]
    return taken


def server_frame(sock: socket.socket, buffer: bytearray, timeout: float = 10) -> tuple[int, bytes]:
    """The next (unmasked) frame from the server: its opcode and payload."""
    first, second = read_exactly(sock, buffer, 2, timeout)
    assert not second & 0x80, "a server frame must not be masked"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", read_exactly(sock, buffer, 2, timeout))
    elif size == 127:
        (size,) = struct.unpack("!Q", read_exactly(sock, buffer, 8, timeout))
    return first & 0x0F, read_exactly(sock, buffer, size, timeout)


def close_code_of(payload: bytes) -> tuple[int, str]:
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def raw_handshake(
    port: int,
    path: str = "/ws/echo/",
    version: str = "HTTP/1.1",
    headers: dict[str, str] | None = None,
) -> tuple[socket.socket, str, bytearray]:
    """Send a handshake; return the socket, the response head and what followed it."""
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    request = f"GET {path} {version}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields.items() if value is not None
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request.encode() + b"\r\n")
    received = read_until(sock, b"", b"\r\n\r\n", 10)
    head, _, rest = received.partition(b"\r\n\r\n")
    return sock, head.decode("latin-1"), bytearray(rest)


def opened(port: int, path: str = "/ws/echo/") -> tuple[socket.socket, bytearray]:
    sock, head, rest = raw_handshake(port, path)
    assert head.startswith("HTTP/1.1 101 "), head
    return sock, rest


# -- 1. the protocol, with a real client -----------------------------------------------------


def test_echo_text_and_binary_with_subprotocol_and_compression(server):
    async def talk():
        async with websockets.connect(ws_url(server, "/ws/echo/"), subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            assert "Server" not in ws.response.headers
            await ws.send("héllo ✓")
            assert await ws.recv() == "héllo ✓"
            await ws.send(b"\x00\xff" * 1000)
            assert await ws.recv() == b"\x00\xff" * 1000
            # A message just under the limit passes, compressed both ways.
            big = "a" * (MAX_MESSAGE - 10)
            await ws.send(big)
            assert await ws.recv() == big

    run(talk())


def test_application_close_code_and_reason_reach_the_client(server):
    async def talk():
        async with websockets.connect(ws_url(server, "/ws/echo/")) as ws:
            await ws.send("close 4001 see you")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd

    received = run(talk())
    assert (received.code, received.reason) == (4001, "see you")


def test_a_close_reason_too_long_for_a_frame_is_cut_not_sent_broken(server):
    async def talk():
        async with websockets.connect(ws_url(server, "/ws/echo/")) as ws:
            await ws.send("close 4002 " + "é" * 100)  # 200 bytes of UTF-8
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd

    received = run(talk())
    assert received.code == 4002
    assert received.reason == "é" * 61  # 122 bytes: the 123rd would split a character


def test_the_clients_close_code_reaches_the_application(server):
    async def talk():
        async with websockets.connect(ws_url(server, "/ws/echo/")) as ws:
            await ws.close(4321, "client leaves")

    run(talk())
    wait_for_log(server, r"ws-app: disconnect 4321")


def test_a_dropped_connection_is_a_disconnect_1006(server):
    sock, _ = opened(server.port, "/ws/idle/")
    before = server.output.count("ws-app: disconnect 1006")
    sock.close()
    wait_until(
        lambda: server.output.count("ws-app: disconnect 1006") > before,
        10,
        "the application's websocket.disconnect 1006",
    )


def test_a_client_that_leaves_before_the_application_decides(server):
    """The handshake waits for the application; a client gone meanwhile is a
    websocket.disconnect 1006, and a late accept raises an OSError (the spec's)."""
    before = server.output.count("ws-app: accept failed: ClientDisconnected")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(
        (
            f"GET /ws/slow-accept/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    time.sleep(0.1)
    sock.close()
    wait_until(
        lambda: server.output.count("ws-app: accept failed: ClientDisconnected") > before,
        10,
        "the late accept to fail",
    )
    assert requests.get(server.url("/hello/"), timeout=5).status_code == 200


def test_accept_headers_scope_and_forwarded_client(server):
    async def talk(headers):
        async with websockets.connect(
            ws_url(server, "/ws/scope/?room=1"),
            subprotocols=["a", "b"],
            additional_headers=headers,
        ) as ws:
            assert ws.response.headers["X-WS-Header"] == "yes"
            return json.loads(await ws.recv())

    scope = run(talk({}))
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/ws/scope/"
    assert scope["query_string"] == "room=1"
    assert scope["subprotocols"] == ["a", "b"]
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    # The lifespan's state, copied into the connection's scope.
    assert scope["state"] == {"greeting": "hello from lifespan"}
    # --forwarded-allow-ips 127.0.0.1: the proxy's word on the client and its scheme.
    proxied = run(talk({"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}))
    assert proxied["client"] == ["203.0.113.9", 0]
    assert proxied["scheme"] == "wss"


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        # websocket.close before websocket.accept: 403, as the ASGI spec says.
        ("/ws/deny/", 403, b"Forbidden\n"),
        ("/ws/nothing-here/", 403, b"Forbidden\n"),
        # websocket.http.response.*: the application's own answer, body in two parts.
        ("/ws/deny-body/", 401, b"who are you?"),
        # An exception before accepting: 500, and the traceback in the log.
        ("/ws/fail/", 500, b"Internal Server Error\n"),
    ],
)
def test_refused_handshakes(server, path, status, body):
    async def talk():
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url(server, path)):
                pass
        return refused.value.response

    response = run(talk())
    assert response.status_code == status
    assert bytes(response.body) == body
    if path == "/ws/deny-body/":
        assert response.headers["X-Denied"] == "yes"
    if path == "/ws/fail/":
        wait_for_log(server, r"RuntimeError: failed before accepting")


@pytest.mark.parametrize(("path", "code"), [("/ws/return/", 1000), ("/ws/fail-after/", 1011)])
def test_an_application_that_ends_closes_its_websocket(server, path, code):
    async def talk():
        async with websockets.connect(ws_url(server, path)) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert run(talk()) == code


def test_metrics_count_connections_messages_and_closes(server):
    async def talk():
        async with websockets.connect(ws_url(server, "/ws/echo/")) as ws:
            await ws.send("one")
            await ws.recv()
            # Messages are added to the counters every second.
            samples = scrape_until(
                server,
                lambda s: (
                    value_of(s, "hurricane_websocket_connections_open") >= 1
                    and value_of(s, "hurricane_websocket_messages_total", direction="out") >= 1
                ),
                "an open websocket and its messages counted",
            )
            await ws.close(4555)
            return samples

    during = run(talk())
    assert value_of(during, "hurricane_websocket_messages_total", direction="in") >= 1
    assert value_of(during, "hurricane_websocket_messages_total", direction="out") >= 1
    after = scrape_until(
        server,
        lambda s: value_of(s, "hurricane_websocket_closes_total", code="4555") == 1,
        "the close counted by its code",
    )
    assert value_of(after, "hurricane_websocket_connections_open") >= 0


def test_a_thousand_idle_websockets_keep_the_pod_ready_in_bounded_memory(server):
    """Idle WebSockets are not requests in flight: readiness stays 200 and HTTP is
    answered at once. Their memory: bench/ws_echo.py measures about 24 KiB each; the
    bound here leaves room for the allocator."""
    pid = server.process.pid
    requests.get(server.url("/hello/"), timeout=5)
    before = process_rss_kib(pid)
    socks = [opened(server.port, "/ws/idle/")[0] for _ in range(1000)]
    try:
        assert requests.get(server.probe("/ready"), timeout=5).status_code == 200
        started = time.monotonic()
        assert requests.get(server.url("/hello/"), timeout=5).status_code == 200
        assert time.monotonic() - started < 0.5
        per_connection_kib = (process_rss_kib(pid) - before) / 1000
        assert per_connection_kib < 64, f"{per_connection_kib:.0f} KiB per idle WebSocket"
    finally:
        for sock in socks:
            sock.close()


# -- 2. hostile handshakes and frames, on a raw socket ---------------------------------------


@pytest.mark.parametrize(
    ("version", "headers", "status", "reason"),
    [
        ("HTTP/1.1", {"Sec-WebSocket-Key": None}, 400, "Sec-WebSocket-Key"),
        ("HTTP/1.1", {"Sec-WebSocket-Key": "too-short"}, 400, "Sec-WebSocket-Key"),
        ("HTTP/1.1", {"Sec-WebSocket-Version": "8"}, 426, "version"),
        ("HTTP/1.0", {}, 400, "HTTP/1.1"),
        ("HTTP/1.1", {"Connection": "keep-alive"}, 400, "Connection: Upgrade"),
        ("HTTP/1.1", {"Content-Length": "5"}, 400, "no body"),
    ],
)
def test_bad_handshakes_are_refused_before_the_application_hears_of_them(
    server, version, headers, status, reason
):
    connects_before = server.output.count("101 GET")
    sock, head, rest = raw_handshake(server.port, version=version, headers=headers)
    sock.close()
    assert head.startswith(f"HTTP/1.1 {status} "), head
    assert "connection: close" in head.lower()
    assert reason in rest.decode(), rest
    if status == 426:
        assert "Sec-WebSocket-Version: 13" in head
    assert server.output.count("101 GET") == connects_before


def test_an_oversize_message_is_closed_with_1009_before_its_payload(server):
    sock, buffer = opened(server.port)
    # Only the header, announcing one byte more than the limit: refused from it.
    sock.sendall(client_frame(0x2, b"", length=MAX_MESSAGE + 1))
    opcode, payload = server_frame(sock, buffer)
    sock.close()
    assert opcode == 0x8
    assert close_code_of(payload)[0] == 1009


def test_a_compressed_message_over_the_limit_once_inflated_is_closed_with_1009(server):
    """A few KiB of deflate that inflate past --ws-max-message-size: refused as it
    inflates, not after."""

    async def talk():
        async with websockets.connect(ws_url(server, "/ws/echo/")) as ws:
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            await ws.send("a" * (MAX_MESSAGE * 8))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert run(talk()) == 1009


def test_invalid_utf8_in_a_text_message_is_closed_with_1007(server):
    sock, buffer = opened(server.port)
    sock.sendall(client_frame(0x1, b"ok \xff\xfe"))
    opcode, payload = server_frame(sock, buffer)
    assert opcode == 0x8
    assert close_code_of(payload)[0] == 1007
    # A valid message on a fresh connection still echoes: the check costs nothing else.
    sock2, buffer2 = opened(server.port)
    sock2.sendall(client_frame(0x1, "ünïcode".encode()))
    assert server_frame(sock2, buffer2) == (0x1, "ünïcode".encode())
    sock.close()
    sock2.close()


@pytest.mark.parametrize(
    "frame",
    [
        client_frame(0x9, b"ping", fin=False),  # a fragmented control frame
        client_frame(0x9, b"p" * 126),  # a control frame over 125 bytes
        client_frame(0x0, b"nothing to continue"),
        client_frame(0x3, b"reserved opcode"),
        bytes([0x80 | 0x40 | 0x1, 0x80 | 2]) + b"\0\0\0\0hi",  # RSV1 without deflate
        client_frame(0x8, struct.pack("!H", 5000)),  # a close code no one may send
        client_frame(0x8, struct.pack("!H", 1005)),  # "no status": never sent
        client_frame(0x8, b"\x03"),  # half a code
        client_frame(0x8, struct.pack("!H", 1000) + b"\xff"),  # a reason not UTF-8
    ],
    ids=[
        "fragmented-ping",
        "long-ping",
        "lone-continuation",
        "reserved-opcode",
        "rsv1",
        "close-5000",
        "close-1005",
        "close-1-byte",
        "close-bad-reason",
    ],
)
def test_protocol_errors_are_closed_with_1002(server, frame):
    sock, buffer = opened(server.port)
    sock.sendall(frame)
    opcode, payload = server_frame(sock, buffer)
    sock.close()
    assert opcode == 0x8
    assert close_code_of(payload)[0] == 1002


def test_fragmented_messages_and_pings_between_them(server):
    sock, buffer = opened(server.port)
    sock.sendall(
        client_frame(0x1, b"frag", fin=False)
        + client_frame(0x9, b"are you there")
        + client_frame(0x0, b"ment", fin=False)
        + client_frame(0x0, b"ed")
    )
    assert server_frame(sock, buffer) == (0xA, b"are you there")
    assert server_frame(sock, buffer) == (0x1, b"fragmented")
    sock.close()


def process_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_client_sending_faster_than_the_application_reads_is_held_in_the_kernel(server):
    """/ws/stalled/ never receives: after INBOX_BOUND messages the server reads no
    more frames, so the client's sends block once the socket buffers are full."""
    sock, _ = opened(server.port, "/ws/stalled/")
    message = client_frame(0x2, b"m" * 60000)
    rss_before = process_rss_kib(server.process.pid)
    sock.settimeout(0.5)
    sent = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline and sent < 400 * len(message):
            sent += sock.send(message)
    except TimeoutError:
        pass  # the kernel's buffers are full: the server stopped reading
    growth_mib = (process_rss_kib(server.process.pid) - rss_before) / 1024
    sock.close()
    assert sent < 200 * len(message), f"the server took {sent / 2**20:.0f} MiB unread"
    assert growth_mib < 20, f"the server grew {growth_mib:.0f} MiB"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_client_that_never_reads_holds_its_application_back(server):
    """/ws/flood/ sends 64 KiB messages as fast as they are taken: each send waits
    for the stream, so what piles up is the kernel's socket buffers, not the
    process's memory."""
    rss_before = process_rss_kib(server.process.pid)
    sock, _ = opened(server.port, "/ws/flood/")
    time.sleep(2)
    counts = [int(n) for n in re.findall(r"ws-app: flood sent (\d+)", server.output)]
    growth_mib = (process_rss_kib(server.process.pid) - rss_before) / 1024
    sock.close()
    assert counts, "the application sent nothing"
    # 64 KiB each: the kernel's send and receive buffers hold a few MiB on loopback.
    assert max(counts) < 300, f"{max(counts)} messages of 64 KiB went out unread"
    assert growth_mib < 20, f"the server grew {growth_mib:.0f} MiB"
    wait_for_log(server, r"ws-app: flood stopped after \d+")


# -- 3. options: pings, compression off -------------------------------------------------------


def test_pings_and_a_client_that_does_not_answer_them(tmp_path):
    server = start_server(
        tmp_path,
        "--ws-ping-interval",
        "0.3",
        "--ws-ping-timeout",
        "0.3",
        "--ws-per-message-deflate",
        "off",
    )
    try:
        sock, head, buffer = raw_handshake(
            server.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"}
        )
        assert head.startswith("HTTP/1.1 101 "), head
        assert "sec-websocket-extensions" not in head.lower()  # compression is off
        started = time.monotonic()
        assert server_frame(sock, buffer)[0] == 0x9  # a ping
        opcode, payload = server_frame(sock, buffer)  # no pong: closed
        assert opcode == 0x8
        assert close_code_of(payload) == (1000, "ping timed out")
        assert time.monotonic() - started < 3
        sock.close()

        # A client that answers (the websockets package does) stays open.
        async def talk():
            async with websockets.connect(ws_url(server, "/ws/echo/")) as ws:
                await asyncio.sleep(1.2)
                await ws.send("still here")
                return await ws.recv()

        assert run(talk()) == "still here"
    finally:
        server.kill()


# -- 4. the drain ------------------------------------------------------------------------------


def test_sigterm_refuses_new_websockets_then_closes_open_ones_with_1001(tmp_path):
    server = start_server(tmp_path, "--shutdown-delay", "1", "--graceful-timeout", "5")
    try:

        async def drain():
            ws = await websockets.connect(ws_url(server, "/ws/idle/"))
            server.signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await asyncio.to_thread(
                lambda: requests.get(server.probe("/ready"), timeout=5).status_code
            )
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(ws_url(server, "/ws/idle/"))
            started = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return ready, refused.value.response.status_code, closed.value.rcvd, started

        ready, refused, received, started = run(drain())
        assert ready == 503
        assert refused == 503
        assert (received.code, received.reason) == (1001, "going away")
        assert server.wait_exit(5) == 0
        output = server.output
        assert "Closing 1 WebSocket(s) with 1001 (going away)" in output
        assert "ws-app: disconnect 1001" in output
        # The lifespan's shutdown runs after the connections closed.
        assert output.index("ws-app: disconnect 1001") < output.index("lifespan shutdown")
    finally:
        server.kill()


def test_with_processes_the_drain_refuses_new_websockets_and_closes_open_ones(tmp_path):
    """--processes 2: the supervisor holds --shutdown-delay; its serving processes
    refuse new handshakes meanwhile, then close what is open with 1001."""
    server = start_server(tmp_path, "--processes", "2", "--workers", "2", "--shutdown-delay", "1.5")
    try:

        async def drain():
            open_ones = [await websockets.connect(ws_url(server, "/ws/idle/")) for _ in range(4)]
            # The supervisor's /metrics adds up its processes' open WebSockets.
            await asyncio.to_thread(
                scrape_until,
                server,
                lambda s: value_of(s, "hurricane_websocket_connections_open") == 4,
                "4 open WebSockets over both processes",
            )
            server.signal(signal.SIGTERM)
            await asyncio.sleep(0.8)  # the serving processes see it at their next heartbeat
            statuses = []
            for _ in range(4):
                with pytest.raises(websockets.InvalidStatus) as refused:
                    await websockets.connect(ws_url(server, "/ws/idle/"))
                statuses.append(refused.value.response.status_code)
            codes = []
            for ws in open_ones:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                codes.append(closed.value.rcvd.code)
            return statuses, codes

        statuses, codes = run(drain())
        assert statuses == [503] * 4
        assert codes == [1001] * 4
        assert server.wait_exit(10) == 0
    finally:
        server.kill()


# -- 5. projects without a WebSocket application -----------------------------------------------


@pytest.mark.parametrize("args", [(), ("--asgi",)], ids=["wsgi", "django-asgi-handler"])
def test_a_project_without_websockets_answers_400_not_200(serve, args):
    server = serve(*args)
    sock, head, rest = raw_handshake(server.port, path="/hello/")
    sock.close()
    assert head.startswith("HTTP/1.1 400 "), head
    assert rest.decode().strip() == (
        "No WebSockets here: the application serves HTTP only (no ASGI_APPLICATION)"
    )
    assert requests.get(server.url("/hello/"), timeout=5).status_code == 200


# -- 6. lifespan --------------------------------------------------------------------------------


def test_lifespan_startup_failed_fails_the_start(tmp_path):
    _, result = run_serve(tmp_path, "--cpu-affinity", "off", **ws_env(TEST_LIFESPAN="fail"))
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "ASGI lifespan start-up failed: lifespan.startup.failed: the cache is down" in output, (
        output
    )
    assert "Traceback" not in output


def test_lifespan_on_requires_an_application_that_takes_it(tmp_path):
    _, result = run_serve(
        tmp_path,
        "--lifespan",
        "on",
        "--cpu-affinity",
        "off",
        **ws_env(TEST_LIFESPAN="unsupported"),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "does not take the ASGI lifespan protocol (ValueError: no lifespan here)" in output


def test_lifespan_auto_serves_without_an_application_that_does_not_take_it(tmp_path):
    server = start_server(tmp_path, TEST_LIFESPAN="unsupported")
    try:
        wait_for_log(server, r"does not take the lifespan protocol .*: serving without")
        assert requests.get(server.url("/hello/"), timeout=5).status_code == 200
    finally:
        server.kill()


def test_the_lifespan_state_reaches_http_requests_too(server):
    response = requests.get(server.url("/lifespan-state/"), timeout=5)
    assert response.json() == {"greeting": "hello from lifespan"}


def test_lifespan_off_never_sends_it(tmp_path):
    server = start_server(tmp_path, "--lifespan", "off")
    try:
        assert requests.get(server.url("/hello/"), timeout=5).status_code == 200
        server.signal(signal.SIGTERM)
        assert server.wait_exit(10) == 0
        assert "lifespan" not in server.output
    finally:
        server.kill()


def test_options_are_checked(tmp_path):
    _, result = run_serve(tmp_path, "--lifespan", "sometimes", **ws_env())
    assert result.returncode != 0
    assert "--lifespan" in result.stdout + result.stderr
    assert "auto, on or off" in result.stdout + result.stderr


# -- 7. a fuzz run ------------------------------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return int(re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])


def random_frame(rng: random.Random) -> bytes:
    """A frame that may be anything: any opcode, flags, masked or not, a length that
    may lie, a payload of random bytes or of text."""
    payload = rng.choice(
        [
            b"",
            rng.randbytes(rng.randint(1, 200)),
            "é✓ text".encode() * rng.randint(1, 30),
            rng.randbytes(rng.randint(126, 3000)),
        ]
    )
    first = rng.getrandbits(8) if rng.random() < 0.3 else 0x80 | rng.choice([0, 1, 2, 8, 9, 10])
    masked = rng.random() < 0.9
    announced = len(payload) if rng.random() < 0.8 else rng.choice([0, 5, 126, 70000, 2**40])
    if announced < 126:
        header = bytes([first, (0x80 if masked else 0) | announced])
    elif announced < 65536:
        header = bytes([first, (0x80 if masked else 0) | 126]) + struct.pack("!H", announced)
    else:
        header = bytes([first, (0x80 if masked else 0) | 127]) + struct.pack("!Q", announced)
    if not masked:
        return header + payload
    mask = rng.randbytes(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_fuzzed_handshakes_and_frames_get_no_5xx_no_hang_and_leak_nothing(server):
    rng = random.Random(20261204)
    pid = server.process.pid
    requests.get(server.url("/hello/"), timeout=5)  # the first request's lazy set-up
    fds_before, threads_before = open_fds(pid), thread_count(pid)
    errors_before = server.output.count(" ERROR ")
    statuses = set()
    # Handshakes with a field dropped, emptied or garbled.
    for _ in range(60):
        headers = {
            name: rng.choice([None, "", "x" * rng.randint(1, 40), value])
            for name, value in {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": KEY,
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
                "Sec-WebSocket-Protocol": "chat, other",
            }.items()
        }
        headers["Upgrade"] = headers["Upgrade"] or "websocket"  # else it is plain HTTP
        sock, head, _ = raw_handshake(server.port, path="/ws/echo/", headers=headers)
        sock.close()
        statuses.add(int(head.split()[1]))
    assert not {s for s in statuses if s >= 500}, statuses
    # Frames: each connection gets a burst of random frames, and must end (closed by
    # the server, or answered) within a few seconds.
    for _ in range(40):
        sock, buffer = opened(server.port)
        sock.sendall(b"".join(random_frame(rng) for _ in range(rng.randint(1, 8))))
        sock.settimeout(0.5)
        with contextlib.suppress(OSError):  # timed out (still open), or reset
            while sock.recv(65536):
                pass
        sock.close()
    assert requests.get(server.url("/hello/"), timeout=5).status_code == 200
    wait_until(
        lambda: open_fds(pid) <= fds_before + 2,
        15,
        f"the server's descriptors back to {fds_before} (now {open_fds(pid)})",
    )
    assert thread_count(pid) <= threads_before + 2
    # What the application heard of each end is a code a peer may send, or the
    # server's own 1005 (no code) and 1006 (dropped).
    codes = {int(code) for code in re.findall(r"ws-app: disconnect (\d+)", server.output)}
    assert all(
        c in {1000, 1001, 1002, 1003, 1005, 1006} or 1007 <= c <= 1014 or 3000 <= c < 5000
        for c in codes
    ), codes
    new_errors = server.output.count(" ERROR ") - errors_before
    assert new_errors == 0, server.output[-3000:]
