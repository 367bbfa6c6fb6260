"""The contract of hurricane.http.tornado_compat, held against Tornado's own
HTTPServer on real sockets: each private internal Hurricane relies on still does what
the function that wraps it promises. A Tornado release that changes one fails here."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tomllib
import tornado
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.netutil import add_accept_handler, bind_sockets

from conftest import ROOT
from hurricane.http import tornado_compat as compat


class Recorder(httputil.HTTPServerConnectionDelegate):
    """Tornado's delegate protocol, recording what the compat functions say of each
    connection at each step, and answering through ``respond``."""

    def __init__(self, respond: Callable[[Any, Any], None] | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.connections: list[Any] = []
        self.respond = respond or (lambda conn, delegate: write_plain(conn, b"ok"))

    def start_request(self, server_conn: Any, request_conn: Any) -> httputil.HTTPMessageDelegate:
        self.connections.append(request_conn)
        recorder = self

        class Delegate(httputil.HTTPMessageDelegate):
            def headers_received(self, start_line: Any, headers: Any) -> None:
                recorder.seen.append(
                    {
                        "parsed": compat.start_line_parsed(request_conn),
                        "body_read": compat.body_read(request_conn),
                        "fields": compat.header_field_count(headers),
                        "closes": compat.closes_after_response(request_conn),
                        "path": start_line.path,
                    }
                )

            def finish(self) -> None:
                recorder.seen[-1]["body_read_at_finish"] = compat.body_read(request_conn)
                recorder.respond(request_conn, self)

        return Delegate()


def write_plain(conn: Any, body: bytes) -> None:
    headers = httputil.HTTPHeaders({"Content-Length": str(len(body))})
    conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", 200, "OK"), headers, body)
    conn.finish()


async def serving(
    delegate: httputil.HTTPServerConnectionDelegate,
    test: Callable[[HTTPServer, int], Awaitable[None]],
    **server_options: Any,
) -> None:
    server = HTTPServer(delegate, **server_options)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    try:
        await test(server, sockets[0].getsockname()[1])
    finally:
        server.stop()
        await server.close_all_connections()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_request_being_read():
    """Before the headers are complete nothing is parsed; in headers_received the start
    line is, the body not yet; at finish the body is; a header sent twice counts
    twice; a pipelined request waits in the stream's buffer."""
    recorder = Recorder()

    async def test(server: HTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
        await writer.drain()
        await until(lambda: compat.open_connections(server), "the connection")
        [conn] = compat.open_connections(server)
        await asyncio.sleep(0.05)
        assert not recorder.seen  # headers incomplete: no request yet
        writer.write(b"X-A: 2\r\nContent-Length: 3\r\n\r\n")
        await writer.drain()
        await until(lambda: recorder.seen, "the headers")
        assert recorder.seen[0]["parsed"] is True
        assert recorder.seen[0]["body_read"] is False
        assert recorder.seen[0]["fields"] == 4  # Host, X-A twice, Content-Length
        assert recorder.seen[0]["closes"] is False
        # The body, and right behind it a second request, pipelined.
        writer.write(b"abcGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await read_response(reader))[1] == b"ok"
        assert (await read_response(reader))[1] == b"ok"
        assert recorder.seen[0]["body_read_at_finish"] is True
        assert recorder.seen[1]["path"] == "/b"
        assert compat.open_connections(server) == [conn]  # both on one connection
        writer.close()

    asyncio.run(serving(recorder, test))


def test_buffered_bytes_are_what_the_stream_read_and_nobody_asked_for():
    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            stream = IOStream(ours)
            assert compat.buffered_bytes(stream) == 0
            theirs.sendall(b"GET / HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
            first = await stream.read_until(b"\r\n\r\n")
            assert first == b"GET / HTTP/1.1\r\n\r\n"
            assert compat.buffered_bytes(stream) == len(b"GET /next HTTP/1.1\r\n\r\n")
            stream.close()

    asyncio.run(main())


def test_close_after_response_closes_and_says_so():
    """Asked for while the request is read, the response says Connection: close and
    the connection closes after it; closes_after_response tells the client's own
    Connection: close apart from a keep-alive request."""

    def respond(conn: Any, delegate: Any) -> None:
        if recorder.seen[-1]["path"] == "/close":
            compat.close_after_response(conn)
            recorder.seen[-1]["closes_now"] = compat.closes_after_response(conn)
        write_plain(conn, b"ok")

    recorder = Recorder(respond)

    async def test(server: HTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /keep HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = await read_response(reader)
        assert b"connection: close" not in head.lower()
        writer.write(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = await read_response(reader)
        assert b"connection: close" in head.lower() and body == b"ok"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert recorder.seen[1]["closes_now"] is True
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /asked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await read_response(reader)
        assert recorder.seen[-1]["closes"] is True
        writer.close()

    asyncio.run(serving(recorder, test))


def test_a_response_written_whole_keeps_the_connection_and_ends_when_written():
    """The head and body written to the stream directly: finish() ends the request,
    and the same connection serves the next one."""
    finished: list[Any] = []

    def respond(conn: Any, delegate: Any) -> None:
        body = b"whole"
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        written = conn.stream.write(head + body)
        compat.wrote_response_head(conn, written)
        finished.append(conn.finish())

    recorder = Recorder(respond)

    async def test(server: HTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[1] == b"whole"
        assert len(recorder.seen) == 3
        assert len(compat.open_connections(server)) == 1  # one connection for all three
        await until(lambda: all(f is None or f.done() for f in finished), "finish")
        writer.close()

    asyncio.run(serving(recorder, test))


def test_a_streamed_head_written_whole_lets_tornado_frame_the_chunks():
    """A streamed response's head written to the stream directly: conn.write frames
    each chunk as said (chunked, or counted against a Content-Length), finish() ends
    the body, and the same connection serves the next request."""

    def respond(conn: Any, delegate: Any) -> None:
        chunked = recorder.seen[-1]["path"] == "/chunked"
        if chunked:
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
        compat.wrote_response_head(conn, conn.stream.write(head), chunked, None if chunked else 6)
        conn.write(b"abc")
        conn.write(b"def")
        conn.finish()

    recorder = Recorder(respond)

    async def test(server: HTTPServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        framed = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert framed == b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
        writer.write(b"GET /counted HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[1] == b"abcdef"
        assert len(compat.open_connections(server)) == 1  # one connection for both
        writer.close()

    asyncio.run(serving(recorder, test))


def test_listen_with_our_accept_handler_then_stop_accepting_keeps_the_socket():
    accepted: list[Any] = []

    def counting_accept_handler(sock: socket.socket, callback: Callable) -> Callable:
        def counted(connection: socket.socket, address: Any) -> None:
            accepted.append(address)
            callback(connection, address)

        return add_accept_handler(sock, counted)

    async def main() -> None:
        server = HTTPServer(Recorder())
        [sock] = bind_sockets(0, "127.0.0.1")
        port = sock.getsockname()[1]
        compat.listen_with(server, sock, counting_accept_handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[1] == b"ok"
        assert len(accepted) == 1
        assert [conn.stream.closed() for conn in compat.open_connections(server)] == [False]

        kept = compat.stop_accepting(server)
        assert kept == [sock] and sock.fileno() >= 0  # still open, to be handed on
        late = socket.create_connection(("127.0.0.1", port))  # queued, never accepted
        await asyncio.sleep(0.1)
        assert len(accepted) == 1
        late.close()
        sock.close()
        writer.close()
        await server.close_all_connections()

        # Tornado's own stop() sees a socket listen_with added, as one add_sockets added.
        other = HTTPServer(Recorder())
        [sock] = bind_sockets(0, "127.0.0.1")
        compat.listen_with(other, sock, counting_accept_handler)
        other.stop()
        assert sock.fileno() == -1

    asyncio.run(main())


def test_adopt_stream_gives_a_servers_stream_our_subclass():
    class Counting(IOStream):
        extra = "ours"

    class Unrelated:
        pass

    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            stream = IOStream(ours)
            compat.adopt_stream(stream, Counting)
            assert isinstance(stream, Counting) and stream.extra == "ours"
            assert not stream.closed()
            with pytest.raises(TypeError):
                compat.adopt_stream(stream, Unrelated)  # type: ignore[arg-type]
            stream.close()

    asyncio.run(main())


def test_stop_timing_headers_leaves_a_slow_header_client_to_the_sweep():
    """Tornado closes a connection whose headers do not arrive within
    idle_connection_timeout; with its timer off, the connection stays open."""

    async def slow_client(port: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and no end of the headers
        await writer.drain()
        try:
            closed = await asyncio.wait_for(reader.read(), 0.6) == b""
        except asyncio.TimeoutError:
            closed = False
        writer.close()
        return closed

    results: dict[str, bool] = {}

    async def timed(server: HTTPServer, port: int) -> None:
        results["timed"] = await slow_client(port)

    async def untimed(server: HTTPServer, port: int) -> None:
        compat.stop_timing_headers(server)
        results["untimed"] = await slow_client(port)

    asyncio.run(serving(Recorder(), timed, idle_connection_timeout=0.2))
    asyncio.run(serving(Recorder(), untimed, idle_connection_timeout=0.2))
    assert results == {"timed": True, "untimed": False}


def test_the_tornado_in_use_is_one_checked_and_pyproject_admits_no_newer():
    assert tornado.version_info[:2] in compat.TESTED_TORNADO, tornado.version
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [requirement] = [d for d in pyproject["project"]["dependencies"] if d.startswith("tornado")]
    newest = max(compat.TESTED_TORNADO)
    assert f"<{newest[0]}.{newest[1] + 1}" in requirement, requirement


# -- WebSockets ---------------------------------------------------------------------------------


def test_strict_websocket_protocol_hands_text_as_bytes_and_records_close_codes():
    """websocket_protocol builds Tornado's protocol from the private _WebSocketParams;
    _handle_message gets each whole message with its opcode (text is handed on as
    bytes, flagged), and a close frame from the client is seen as one."""
    import tornado.web
    import tornado.websocket

    seen: list[Any] = []
    closed: Any = None  # a future, made on the loop below

    class Handler(tornado.websocket.WebSocketHandler):
        def get_websocket_protocol(self) -> Any:
            self.protocol = compat.websocket_protocol(self, None, None, 1024, None)
            return self.protocol

        def on_message(self, message: Any) -> None:
            seen.append((message, self.protocol.message_is_text))
            if message == b"close please":
                self.close(4000, "as asked")

        def on_close(self) -> None:
            closed.set_result((self.protocol.sent_code, self.protocol.received_close))

    async def scenario() -> None:
        nonlocal closed
        closed = asyncio.get_running_loop().create_future()
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(tornado.web.Application([(r"/", Handler)]))
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            client = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/")
            await client.write_message("tëxt")
            await client.write_message(b"\x00bin", binary=True)
            await client.write_message(b"close please", binary=True)
            assert await client.read_message() is None  # closed by the server
            assert await asyncio.wait_for(closed, 5) == (4000, True)
        finally:
            server.stop()

    asyncio.run(scenario())
    assert seen == [("tëxt".encode(), True), (b"\x00bin", False), (b"close please", False)]


def test_strict_websocket_protocol_closes_a_protocol_error_with_1002():
    """Tornado ends every framing error in _abort() with the stream open; the
    subclass sends a close 1002 first."""
    import tornado.web
    import tornado.websocket

    class Handler(tornado.websocket.WebSocketHandler):
        def get_websocket_protocol(self) -> Any:
            return compat.websocket_protocol(self, None, None, 1024, None)

    async def scenario() -> bytes:
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(tornado.web.Application([(r"/", Handler)]))
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            writer.write(bytes([0x09, 0x80]) + b"\0\0\0\0")  # a ping without FIN
            frame = await asyncio.wait_for(reader.read(64), 5)
            writer.close()
            return frame
        finally:
            server.stop()

    frame = asyncio.run(scenario())
    assert frame[0] == 0x88 and frame[2:4] == (1002).to_bytes(2, "big"), frame


def test_has_header_sees_a_field_whatever_the_case_the_client_sent():
    headers = httputil.HTTPHeaders.parse("Host: x\r\nupgrade: websocket\r\nCONNECTION: Upgrade\r\n")
    assert compat.has_header(headers, "Upgrade")
    assert compat.has_header(headers, "Connection")
    assert not compat.has_header(headers, "Sec-Websocket-Key")
    assert not compat.has_header(httputil.HTTPHeaders(), "Upgrade")


@pytest.mark.parametrize("compression", [None, {}], ids=["plain", "permessage-deflate"])
def test_write_websocket_message_frames_text_and_binary_compressed_or_not(compression):
    """write_websocket_message writes through the private _write_frame, compressing
    with the connection's _compressor when deflate was negotiated; its future is the
    stream's."""
    import tornado.web
    import tornado.websocket

    class Handler(tornado.websocket.WebSocketHandler):
        def get_compression_options(self) -> Any:
            return compression

        async def on_message(self, message: Any) -> None:
            protocol = self.ws_connection
            await compat.write_websocket_message(protocol, "tëxt ".encode() * 50, False)
            await compat.write_websocket_message(protocol, b"\x00\xff" * 50, True)

    async def scenario() -> list[Any]:
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(tornado.web.Application([(r"/", Handler)]))
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            client = await tornado.websocket.websocket_connect(
                f"ws://127.0.0.1:{port}/", compression_options=compression
            )
            await client.write_message("go")
            received = [await client.read_message(), await client.read_message()]
            client.close()
            return received
        finally:
            server.stop()

    assert asyncio.run(scenario()) == ["tëxt " * 50, b"\x00\xff" * 50]


def test_strict_websocket_protocol_cuts_frames_from_one_read_however_they_arrive():
    """_read_bytes(n) is every read of a frame (header, length, mask, payload), and
    _wire_bytes_in counts them: frames split byte by byte and frames sent together
    in one write both arrive whole, and no byte is counted twice."""
    import tornado.web
    import tornado.websocket

    seen: list[bytes] = []
    protocols: list[Any] = []

    class Handler(tornado.websocket.WebSocketHandler):
        def get_websocket_protocol(self) -> Any:
            protocol = compat.websocket_protocol(self, None, None, 1 << 20, None)
            protocols.append(protocol)
            return protocol

        def on_message(self, message: Any) -> None:
            seen.append(message)

    def frame(payload: bytes) -> bytes:
        mask = b"\x01\x02\x03\x04"
        size = len(payload)
        length = (
            bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big")
        )
        return b"\x82" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    frames = [frame(b"a" * 5), frame(b"b" * 300), frame(b"c" * 9000)]

    async def scenario() -> None:
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(tornado.web.Application([(r"/", Handler)]))
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            for byte in frames[0] + frames[1][:7]:  # byte by byte, then part of the next
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(frames[1][7:] + frames[2] + frames[0])  # the rest together
            await until(lambda: len(seen) == 4, "four messages")
            writer.close()
        finally:
            server.stop()

    asyncio.run(scenario())
    assert seen == [b"a" * 5, b"b" * 300, b"c" * 9000, b"a" * 5]
    assert protocols[0]._wire_bytes_in == len(frames[0]) * 2 + len(frames[1]) + len(frames[2])
