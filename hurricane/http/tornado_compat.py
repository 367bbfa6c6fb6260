"""Every use of Tornado's private internals, in one place.

Tornado's public API serves HTTP well; Hurricane goes below it where a measured cost or
a limit of that API made it worth it. Each function here says what it buys. Nothing
else in Hurricane touches an attribute of Tornado's that starts with an underscore.

``tests/test_tornado_compat.py`` holds each function to its contract on real sockets,
so a Tornado release that changes what one relies on fails there first, and
``TESTED_TORNADO`` and the upper bound on ``tornado`` in pyproject.toml name the
releases it was checked against.
"""

from __future__ import annotations

import socket
from asyncio import Future
from collections.abc import Callable
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.platform.asyncio import AsyncIOMainLoop
from tornado.websocket import WebSocketHandler, WebSocketProtocol13, _WebSocketParams

# The Tornado releases (major, minor) this module is checked against; pyproject.toml
# admits these and nothing newer.
TESTED_TORNADO = ((6, 4), (6, 5), (6, 6))


# -- the request being read ---------------------------------------------------------------


def start_line_parsed(conn: HTTP1Connection) -> bool:
    """Whether the connection has a complete request line and headers. Tornado has one
    timeout for an idle keep-alive connection and a client sending its headers
    slowly; the sweep (hurricane.http.server) tells them apart by this, and times
    both without a timer per request."""
    return conn._request_start_line is not None


def body_read(conn: HTTP1Connection) -> bool:
    """Whether the request's body has been read whole: the sweep's ``--body-timeout``
    runs only until then."""
    return bool(conn._read_finished)


def buffered_bytes(stream: IOStream) -> int:
    """Bytes the stream has read and nobody has asked for yet: on a keep-alive
    connection, the start of the next request (timed as headers, not as idle)."""
    return int(stream._read_buffer_size)


def header_field_count(headers: httputil.HTTPHeaders) -> int:
    """How many header lines a request sent (a name sent twice counts twice), for
    ``--max-headers``, on every request: one list length per name, 0.6 µs for 8
    lines where counting the public ``get_all()`` takes 2.3 µs (timeit)."""
    return sum(map(len, headers._as_list.values()))


def has_header(headers: httputil.HTTPHeaders, name: str) -> bool:
    """Whether a request sent a header field ``name``, given as Tornado normalizes it
    (``"Upgrade"``): asked on every GET, for the Upgrade of a WebSocket handshake,
    in 35 ns where the public ``get_list`` takes 560 ns (timeit)."""
    return name in headers._as_list


# -- the response being written --------------------------------------------------------------


def close_after_response(conn: HTTP1Connection) -> None:
    """Close the connection once its response is written, and say ``Connection:
    close`` in it if its headers are still to be written: for a drain, a memory
    restart and a refused request. Tornado has no public switch for this."""
    conn._disconnect_on_finish = True


def closes_after_response(conn: HTTP1Connection) -> bool:
    """Whether the connection closes after this response (the client asked for it,
    or :func:`close_after_response` was called): a response head Hurricane writes
    itself must say ``Connection: close`` then."""
    return bool(conn._disconnect_on_finish)


def wrote_response_head(
    conn: HTTP1Connection, written: Future, chunked: bool = False, remaining: int | None = 0
) -> None:
    """Record on the connection what ``write_headers`` records, after Hurricane wrote
    a response's head (and, for a whole response, its body) to the stream itself
    (``written``: the future of its last byte): ``conn.write`` then frames each chunk
    of a streamed body (``chunked``, or counted against ``remaining``, the bytes the
    head announced; None: unbounded), and ``conn.finish()`` ends the body, ends the
    request once the bytes are written, and keeps or closes the connection.

    Writing the head Hurricane joined and checked in one pass, instead of building
    Tornado's HTTPHeaders and having write_headers format and check them again, took
    6% fewer instructions per /plain request (callgrind, bench/results/profile-plain.md).
    """
    conn._chunking_output = chunked
    conn._expected_content_remaining = remaining
    conn._pending_write = written


# -- the server's connections and listening sockets -------------------------------------------


def open_connections(server: HTTPServer) -> list[HTTP1ServerConnection]:
    """The server's open connections (a copy), for the sweep and a drain, which close
    idle ones; Tornado keeps them only to close them all at ``close_all_connections``."""
    return list(server._connections)


def listen_with(
    server: HTTPServer,
    sock: socket.socket,
    add_accept_handler: Callable[[socket.socket, Callable[[socket.socket, Any], None]], Any],
) -> None:
    """Serve on ``sock`` with ``add_accept_handler`` in place of Tornado's own, which
    takes every waiting connection per wake-up and spins when accept() runs out of
    file descriptors (2.98 CPU-s in 3 s and 18,627 tracebacks at ``ulimit -n 64``).
    The server's ``stop``, :func:`stop_accepting` and :func:`listening_sockets` see the
    socket as if ``add_sockets`` had added it."""
    server._sockets[sock.fileno()] = sock
    server._handlers[sock.fileno()] = add_accept_handler(
        sock,
        server._handle_connection,
    )


def stop_accepting(server: HTTPServer) -> list[socket.socket]:
    """Stop taking connections but leave the listening sockets open, and return them:
    an in-place restart hands them to the next process, so that no connection is
    refused meanwhile (``server.stop()`` would close them)."""
    handlers = server._handlers
    for remove_handler in handlers.values():
        remove_handler()
    handlers.clear()
    return list(server._sockets.values())


def adopt_stream(stream: IOStream, subclass: type[IOStream]) -> None:
    """Make a stream Tornado's server created an instance of ``subclass`` (of
    IOStream, adding attributes and overriding public methods only): TCPServer
    builds its streams itself and has no hook for their class."""
    if not issubclass(subclass, type(stream)):
        raise TypeError(f"{subclass.__name__} does not extend {type(stream).__name__}")
    stream.__class__ = subclass


def stop_timing_headers(server: HTTPServer) -> None:
    """Turn off Tornado's per-request header timer: the sweep times header reads."""
    server.conn_params.header_timeout = None


# -- WebSockets ------------------------------------------------------------------------------


# Close codes a peer may send (RFC 6455 7.4; 1012-1014 registered since): 1004-1006
# and 1015 are never sent, 3000-4999 belong to libraries and applications.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def valid_close_payload(data: bytes) -> bool:
    """Whether a close frame's payload is empty or a sendable code with a UTF-8
    reason."""
    if not data:
        return True
    if len(data) < 2:
        return False
    code = int.from_bytes(data[:2], "big")
    if code not in SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
        return False
    try:
        data[2:].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Bytes a WebSocket asks its stream for at once (StrictWebSocketProtocol._read_bytes).
READ_AHEAD = 65536


class StrictWebSocketProtocol(WebSocketProtocol13):
    """Tornado's WebSocket protocol (framing, masking, fragments, ping/pong, the size
    limit, permessage-deflate), with the close codes RFC 6455 asks for where Tornado
    only drops the connection, so that a client (and the app's ``websocket.disconnect``)
    learns why:

    - a text message that is not UTF-8: Tornado aborts; here the handler gets it as
      bytes with :attr:`message_is_text` set, decodes it itself and closes with 1007;
    - a protocol error (a fragmented or oversized control frame, reserved bits, a
      continuation of nothing, an unknown opcode): every one ends in ``_abort()``
      while the connection is open and no close was sent; here a close 1002 goes
      out first. A close frame with a code no peer may send, or a reason that is
      not UTF-8, is one too (Tornado takes any).

    It also records the close codes that went each way (:attr:`sent_code`,
    :attr:`received_close`), which Tornado folds into one ``close_code`` of the
    client's, and reads frames from one read of the stream where Tornado makes three
    (:meth:`_read_bytes`). It relies on ``_handle_message(opcode, data)`` (called
    once per whole message and per control frame), ``_abort()``, ``_read_bytes(n)``
    (every read of a frame) and the ``_wire_bytes_in`` it counts.
    """

    message_is_text = False
    #: The first close code this side sent (None: none yet).
    sent_code: int | None = None
    #: Whether the client sent a close frame.
    received_close = False

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        if opcode == 0x1:
            self.message_is_text = True
            # As binary: decompressed and counted the same, but not decoded here.
            return super()._handle_message(0x2, data)
        self.message_is_text = False
        if opcode == 0x8:
            if not valid_close_payload(data):
                # Tornado would pass any code on (50089 reached the application) and
                # fail in its task on a reason that is not UTF-8.
                self._abort()
                return None
            self.received_close = True
        return super()._handle_message(opcode, data)

    #: What was read from the stream and not parsed yet (see _read_bytes).
    unparsed: bytearray | None = None

    async def _read_bytes(self, n: int) -> bytes:
        # Tornado's reads each frame in three stream reads (header, mask, payload),
        # each a future and a pass through the stream's buffer: 30% of the event
        # loop's samples on an echo (py-spy). Here the stream is asked once for
        # whatever it has (up to READ_AHEAD), and frames are cut from that. Still
        # nothing is read while the application holds the frame loop (backpressure),
        # and no more than READ_AHEAD beyond the frame being parsed; a payload's
        # length was checked against the limit before it is read.
        unparsed = self.unparsed
        if unparsed is None:
            unparsed = self.unparsed = bytearray()
        while len(unparsed) < n:
            unparsed += await self.stream.read_bytes(READ_AHEAD, partial=True)
        if len(unparsed) == n:
            data = bytes(unparsed)
            unparsed.clear()
        else:
            data = bytes(unparsed[:n])
            del unparsed[:n]
        self._wire_bytes_in += n
        return data

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.sent_code is None and not self.server_terminated:
            self.sent_code = 1000 if code is None and reason is not None else code
        super().close(code, reason)

    def _abort(self) -> None:
        stream = self.stream
        if stream is not None and not stream.closed() and not self.server_terminated:
            # Only a protocol error aborts an open connection before a close was sent:
            # a closed stream, a failed handshake (no stream yet) and the size limit
            # (which closes with 1009 first) do not get here.
            self.close(1002, "protocol error")
        super()._abort()


def write_websocket_message(
    protocol: WebSocketProtocol13, message: bytes, binary: bool
) -> Future[None]:
    """Send one whole message (compressed when the connection negotiated it), as
    ``write_message`` does, and return the stream's future of its last byte.
    ``write_message`` wraps that future in a task of its own, per message, to turn
    its error into WebSocketClosedError: a task created, scheduled and collected for
    every message sent (5% of the event loop's samples on an echo; py-spy). Raises
    StreamClosedError on a closed stream, and its future fails with it."""
    protocol._message_bytes_out += len(message)
    flags = 0
    if protocol._compressor:
        message = protocol._compressor.compress(message)
        flags |= protocol.RSV1
    return protocol._write_frame(True, 0x2 if binary else 0x1, message, flags=flags)


def websocket_protocol(
    handler: WebSocketHandler,
    ping_interval: float | None,
    ping_timeout: float | None,
    max_message_size: int,
    compression_options: dict[str, Any] | None,
) -> StrictWebSocketProtocol:
    """A server-side :class:`StrictWebSocketProtocol` for ``handler``, for its
    ``get_websocket_protocol()``: Tornado's own builds its parameters in the private
    ``_WebSocketParams``."""
    params = _WebSocketParams(
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_message_size=max_message_size,
        compression_options=compression_options,
    )
    return StrictWebSocketProtocol(handler, False, params)


# -- the event loop -----------------------------------------------------------------------


class LazyReaderIOLoop(AsyncIOMainLoop):
    """Tornado's IOLoop on the running asyncio loop, leaving a socket's reader
    registered while its stream pauses reading.

    Under load, the next request of a keep-alive connection often arrives before
    Tornado asks for it: the stream reads it into its buffer and stops listening for
    reads until the read for it begins, then listens again: a ``remove_reader`` and
    an ``add_reader`` per request, several ``epoll_ctl`` calls (and with uvloop a new
    poll handle), 13% of the event loop's CPU on /plain (py-spy). Here a reader that
    the stream stops wanting stays registered until it fires; most are wanted again
    before that and cost nothing. One that fires unwanted is removed then, and the
    stream is not called: the client's further bytes wait in the kernel, as they
    would with Tornado's own IOLoop.

    It relies on BaseAsyncIOLoop's ``readers`` (the fds with a reader),
    ``selector_loop`` (the asyncio loop) and ``_handle_events`` (the callback every
    ready fd goes through).
    """

    # AsyncIOMainLoop takes keyword arguments only, which its stubs do not say.
    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.unwanted_readers: set[int] = set()

    def update_handler(self, fd: Any, events: int) -> None:
        fd, _ = self.split_fd(fd)
        if events & IOLoop.READ:
            self.unwanted_readers.discard(fd)
        elif fd in self.readers:
            self.unwanted_readers.add(fd)
            events |= IOLoop.READ  # stays registered
        super().update_handler(fd, events)

    def remove_handler(self, fd: Any) -> None:
        self.unwanted_readers.discard(self.split_fd(fd)[0])
        super().remove_handler(fd)

    def _handle_events(self, fd: int, events: int) -> None:
        if events == IOLoop.READ and fd in self.unwanted_readers:
            self.unwanted_readers.discard(fd)
            self.readers.discard(fd)
            self.selector_loop.remove_reader(fd)
            return
        super()._handle_events(fd, events)
