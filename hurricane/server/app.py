"""The app server's HTTP side: one delegate per request, routing it to the probes
(when they share the app port), to static or media files, or to Django.

This module speaks HTTP only; when to accept, drain or stop is decided in
:mod:`hurricane.server.runtime`.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import sys
import tempfile
import time
from asyncio import Future
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from hurricane.django.wsgi import ResponseSink
from hurricane.http.body import Body, rewound, spool
from hurricane.http.refusals import announced_length, refuse_and_close
from hurricane.http.tornado_compat import (
    adopt_stream,
    body_read,
    buffered_bytes,
    close_after_response,
    closes_after_response,
    header_field_count,
    listen_with,
    open_connections,
    start_line_parsed,
    stop_timing_headers,
    wrote_whole_response,
)
from hurricane.http.tornado_compat import stop_accepting as stop_accepting_on

if TYPE_CHECKING:
    from hurricane.server.runtime import ServerState

access_logger = logging.getLogger("hurricane.server.access")
logger = logging.getLogger("hurricane.server.general")


def log_access(
    status: int,
    method: str,
    path: str,
    remote_ip: str,
    seconds: float,
    headers: httputil.HTTPHeaders | None = None,
) -> None:
    """The one access-log record, for app, file and (with LOG_PROBES) probe requests:
    its message is the text line, its fields (``extra``) the JSON format's keys. Its
    level follows the status, as django-hurricane 1.6's did: INFO below 400, WARNING
    for 4xx, ERROR for 5xx (a logger set to WARNING keeps the failures)."""
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_logger.isEnabledFor(level):
        return  # runs for every request: build nothing that nobody reads
    milliseconds = seconds * 1000.0
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(milliseconds, 2),
        "remote_addr": remote_ip,
    }
    if headers is not None:
        request_id = headers.get("X-Request-ID")
        if request_id is not None:
            fields["request_id"] = request_id
        traceparent = headers.get("traceparent")
        if traceparent is not None:
            fields["traceparent"] = traceparent
    access_logger.log(
        level, "%d %s %s (%s) %.2fms", status, method, path, remote_ip, milliseconds, extra=fields
    )


def log_tornado_request(handler: Any) -> None:
    """``log_function`` of Hurricane's Tornado applications."""
    request = handler.request
    log_access(
        handler.get_status(),
        request.method,
        request.uri,
        request.remote_ip,
        request.request_time(),
        request.headers,
    )


_date_cache: list = [0, ""]


def http_date_now() -> str:
    """The Date header HTTP/1.1 requires, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, httputil.format_timestamp(now)
    return _date_cache[1]


# What the header lines of a response may hold (RFC 9110): a field name is a token, and
# a value has no control characters but the horizontal tab. Values go on the wire in
# Latin-1 (PEP 3333), so a character beyond it cannot be sent either.
FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_BESIDES_CR_LF = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0100-\U0010ffff"
FORBIDDEN_IN_FIELD_VALUE = re.compile(rf"[{_FORBIDDEN_BESIDES_CR_LF}\r\n]")
# The same for the status and header lines of a response joined into one text: each
# line ends in CR LF, and CR and LF are counted instead (RequestDelegate._whole_response).
FORBIDDEN_IN_RESPONSE_HEAD = re.compile(rf"[{_FORBIDDEN_BESIDES_CR_LF}]")
CONTENT_LENGTH_LINE = re.compile(r"\ncontent-length: *([0-9]+) *\r", re.IGNORECASE)
# Field names already found valid: an application sends the same few again and again.
# Bounded, in case one makes up names.
_valid_field_names: set[str] = set()
VALID_FIELD_NAMES_KEPT = 1024


class InvalidResponse(ValueError):
    """The application's status or headers cannot be sent as HTTP."""


def without_body(status: int) -> bool:
    """1xx, 204 and 304 responses have no body, not even an empty one (RFC 9110)."""
    return status in (204, 304) or 100 <= status < 200


try:  # the ioctl that tells the bytes a TCP socket has not had acknowledged yet
    import fcntl
    import termios

    SIOCOUTQ: int | None = termios.TIOCOUTQ  # Linux's SIOCOUTQ has the terminal's number
except (ImportError, AttributeError):  # Windows
    SIOCOUTQ = None


def unacknowledged_bytes(sock: socket.socket) -> int:
    """Bytes written to a TCP socket that its peer has not acknowledged yet (0 where
    the system cannot tell)."""
    if SIOCOUTQ is None:
        return 0
    try:
        queued = fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):  # not a TCP socket, or already closed
        return 0
    return int.from_bytes(queued, sys.byteorder, signed=True)


# A whole response's head and body go out in one write below this size; a larger
# body is written as it is, after its head, rather than copied.
JOIN_BELOW = 64 * 1024

# Phases of a connection that the sweep times (GuardedHTTPServer.sweep).
IDLE, HEADERS, BODY, WRITE = "idle", "headers", "body", "write"
# How often, at most, the sweep looks at the open connections; a connection is cut off
# between its timeout and its timeout plus two sweep intervals.
SWEEP_INTERVAL = 1.0
# Before the connection of a too large header block closes, up to this much of what the
# client already sent is read and thrown away: closing with unread data makes the kernel
# reset the connection, and the 431 could be lost (as with refusals.DISCARD_LIMIT).
HEADER_OVERFLOW_DISCARD = 256 * 1024
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 32\r\n\r\nRequest header fields too large\n"
)


# Connections accepted per wake-up of a listening socket: Tornado's own figure (its
# listen backlog). The serving processes of --processes share one socket and take one
# each: a process that accepts a burst of connections at once keeps them all (a
# keep-alive connection stays with the process that accepted it). With Tornado's
# figure, 32 connections opened at once went 82 to 14 over three bursts in one of
# four runs (tests/test_processes.py); with one per wake-up, the process whose loop
# comes back first takes the next, and 20 runs in a row stayed within 3 to 1.
ACCEPT_PER_WAKEUP = 128


# accept() failing for want of a resource (file descriptors, kernel memory) leaves the
# connection in the listen queue and the socket readable: retried at once, the loop
# would spin at 100% CPU and log a traceback per try (18,627 in 3 s with
# ``ulimit -n 64``). Accepting pauses this long instead; a warning says so at most
# every RESOURCE_WARNING_INTERVAL seconds.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE = 0.1
RESOURCE_WARNING_INTERVAL = 10.0


def open_files_limit() -> str:
    try:
        import resource

        return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        return "unknown"


def add_accept_handler(
    sock: socket.socket, callback: Callable[[socket.socket, Any], None], per_wakeup: int
) -> Callable[[], None]:
    """Tornado's ``netutil.add_accept_handler`` with a limit of connections taken per
    wake-up, and a pause when accept() runs out of a resource; returns the callable
    that stops accepting."""
    io_loop = IOLoop.current()
    removed = False
    paused = False
    warned_at = -RESOURCE_WARNING_INTERVAL
    pauses = 0  # since the last warning

    def accept(fd: Any, events: int) -> None:
        for _ in range(per_wakeup):
            if removed or paused:  # handed on or closed, or out of file descriptors
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:  # taken by another process, or none left
                return
            except ConnectionAbortedError:  # closed while it waited in the queue
                continue
            except OSError as error:
                if error.errno not in RESOURCE_ERRNOS:
                    raise
                pause(error)
                return
            callback(connection, address)

    def pause(error: OSError) -> None:
        nonlocal paused, warned_at, pauses
        paused = True
        pauses += 1
        io_loop.remove_handler(sock)
        io_loop.call_later(ACCEPT_PAUSE, resume)
        now = time.monotonic()
        if now - warned_at >= RESOURCE_WARNING_INTERVAL:
            logger.warning(
                "Cannot accept connections on port %s: %s (open files limit %s); new "
                "connections wait in the listen queue, accepting is retried every %.1f s "
                "(%d pause(s) since the last warning)",
                sock.getsockname()[1],
                error.strerror,
                open_files_limit(),
                ACCEPT_PAUSE,
                pauses,
            )
            warned_at, pauses = now, 0

    def resume() -> None:
        nonlocal paused
        paused = False
        if not removed:
            io_loop.add_handler(sock, accept, IOLoop.READ)

    def remove() -> None:
        nonlocal removed
        if not paused:
            io_loop.remove_handler(sock)
        removed = True

    io_loop.add_handler(sock, accept, IOLoop.READ)
    return remove


@dataclass(frozen=True)
class ConnectionLimits:
    """What a client may send and how slowly (``--max-header-size``, the timeouts)."""

    max_header_size: int
    keep_alive_timeout: float
    header_timeout: float
    body_timeout: float
    write_timeout: float

    @classmethod
    def from_options(cls, options: Any) -> ConnectionLimits:
        return cls(
            max_header_size=options.max_header_size,
            keep_alive_timeout=options.keep_alive_timeout,
            header_timeout=options.header_timeout,
            body_timeout=options.body_timeout,
            write_timeout=options.write_timeout,
        )

    @classmethod
    def defaults(cls) -> ConnectionLimits:
        """The limits ``serve`` applies by default (for ``consume``'s probe port, which
        has no such options)."""
        from hurricane.config.options import SERVE_OPTIONS

        default = {option.name: option.default for option in SERVE_OPTIONS}
        return cls(**{name: default[name] for name in cls.__dataclass_fields__})

    @property
    def sweep_interval(self) -> float:
        shortest = min(
            self.keep_alive_timeout, self.header_timeout, self.body_timeout, self.write_timeout
        )
        return max(0.05, min(SWEEP_INTERVAL, shortest / 4))


class GuardedIOStream(IOStream):
    """A server connection's stream: what the sweep needs to know about it, and Nagle's
    algorithm off."""

    accepted_at = 0.0
    requests_started = 0
    current_request: Any = None  # the HTTP1Connection reading or answering a request
    # (request, phase, progress, since): what the sweep last saw the connection at.
    watched: tuple | None = None
    nodelay = False
    # Bytes handed to the kernel; see bytes_taken.
    bytes_written = 0

    def write_to_fd(self, data: memoryview) -> int:
        written = super().write_to_fd(data)
        self.bytes_written += written
        return written

    def bytes_taken(self) -> int:
        """Bytes the client has taken: the progress the sweep looks for while a
        response waits to be written (--write-timeout). The kernel's send buffer holds
        up to 4 MB, and tells the loop it may write again only once a third of it is
        free: counted at the loop, a client reading a steady 500 KB/s showed no
        progress for seconds. So what the client acknowledged counts (on Linux: the
        bytes written less those still queued, unsent or unacknowledged)."""
        return self.bytes_written - unacknowledged_bytes(self.socket)

    def set_nodelay(self, value: bool) -> None:
        # Tornado turns Nagle's algorithm off as each response ends and back on after
        # it: two setsockopt calls per request, 8% of the event loop's CPU on /plain
        # (py-spy). A whole response goes out in one write anyway, and the chunks of a
        # streamed one (server-sent events) should not wait for the client's delayed
        # ACK: off from accept on, for the connection's life, as gunicorn and uvicorn
        # have it.
        if not self.nodelay:
            self.nodelay = True
            super().set_nodelay(True)

    def close(self, exc_info: Any = False) -> None:
        if isinstance(exc_info, UnsatisfiableReadError) and not self.closed():
            request = self.current_request
            # The header read is the only one bounded while no start line is parsed
            # (a chunk-size line has a bound too, but then the start line is known).
            if request is None or not start_line_parsed(request):
                self._answer_headers_too_large()
        super().close(exc_info)

    def _answer_headers_too_large(self) -> None:
        sock = self.socket
        try:
            sock.send(HEADERS_TOO_LARGE)
            discarded = 0
            while discarded < HEADER_OVERFLOW_DISCARD:
                data = sock.recv(65536)
                if not data:
                    break
                discarded += len(data)
        except OSError:  # nothing more to read now (EAGAIN), or the client is gone
            pass


class GuardedHTTPServer(HTTPServer):
    """Tornado's HTTP server with Hurricane's connection limits.

    Tornado has one timeout for both an idle keep-alive connection and a client
    sending its headers slowly, and starts a timer per request for it. Instead, a
    sweep every ``sweep_interval`` looks at each open connection's phase (idle,
    receiving headers, receiving the body, waiting for the client to take its
    response) and closes those that stayed in it too long: no timer on the request
    path, and slow clients are told apart from idle ones.
    """

    # Tornado's Configurable passes the constructor's arguments to initialize; this
    # server takes its limits there too.
    def initialize(  # type: ignore[override]
        self,
        request_callback: Any,
        limits: ConnectionLimits,
        accept_per_wakeup: int = ACCEPT_PER_WAKEUP,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("ssl_options"):
            # Its streams are SSLIOStreams, which handle_stream must not turn into ours.
            raise ValueError("GuardedHTTPServer serves plain HTTP only")
        super().initialize(request_callback, max_header_size=limits.max_header_size, **kwargs)
        stop_timing_headers(self)
        self.limits = limits
        self.accept_per_wakeup = accept_per_wakeup
        self.sweeper: PeriodicCallback | None = None

    def add_sockets(self, sockets: Any) -> None:
        for sock in sockets:
            listen_with(
                self,
                sock,
                lambda sock, callback: add_accept_handler(sock, callback, self.accept_per_wakeup),
            )
        if self.sweeper is None:
            self.io_loop = IOLoop.current()
            self.sweeper = PeriodicCallback(self.sweep, self.limits.sweep_interval * 1000)
            self.sweeper.start()

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        adopt_stream(stream, GuardedIOStream)
        stream.accepted_at = self.io_loop.time()  # type: ignore[attr-defined]
        stream.set_nodelay(True)
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        stream = request_conn.stream  # type: ignore[attr-defined]
        stream.requests_started += 1
        stream.current_request = request_conn
        return super().start_request(server_conn, request_conn)

    def sweep(self) -> None:
        """Close the connections that stayed idle, or kept sending their headers or
        body, longer than their limit."""
        limits = self.limits
        timeouts = {
            IDLE: limits.keep_alive_timeout,
            HEADERS: limits.header_timeout,
            BODY: limits.body_timeout,
            WRITE: limits.write_timeout,
        }
        now = self.io_loop.time()
        closed = {IDLE: 0, HEADERS: 0, BODY: 0, WRITE: 0}
        for conn in open_connections(self):
            stream = conn.stream
            if stream.closed() or not isinstance(stream, GuardedIOStream):
                continue
            request = stream.current_request
            phase = connection_phase(stream, request)
            if phase is None:
                stream.watched = None
                continue
            # Writing, the clock restarts whenever the client takes a byte.
            progress = stream.bytes_taken() if phase == WRITE else 0
            watched = stream.watched
            if (
                watched is None
                or watched[0] is not request
                or watched[1] != phase
                or watched[2] != progress
            ):
                fresh = phase == HEADERS and stream.requests_started <= 1
                stream.watched = (request, phase, progress, stream.accepted_at if fresh else now)
            elif now - watched[3] > timeouts[phase]:
                stream.close()
                closed[phase] += 1
        if closed[HEADERS]:
            logger.info(
                "Closed %d slow connection(s) that sent no complete headers within %g s "
                "(--header-timeout)",
                closed[HEADERS],
                limits.header_timeout,
            )
        if closed[BODY]:
            logger.info(
                "Closed %d slow connection(s) whose request body did not arrive within %g s "
                "(--body-timeout)",
                closed[BODY],
                limits.body_timeout,
            )
        if closed[WRITE]:
            logger.info(
                "Closed %d connection(s) whose client took none of its response for %g s "
                "(--write-timeout)",
                closed[WRITE],
                limits.write_timeout,
            )


def connection_phase(stream: GuardedIOStream, request: Any) -> str | None:
    """What an open connection waits for from its client: None while the request is
    the server's to answer (or no longer Tornado's to read, once detached)."""
    if stream.writing():  # a response the client has yet to take
        return WRITE
    if request is None or not start_line_parsed(request):
        # Bytes in the buffer without a complete header block: headers arrive. A
        # connection that never sent a request is timed as sending headers too.
        if stream.requests_started > 1 and not buffered_bytes(stream):
            return IDLE
        return HEADERS
    if request.stream is None or body_read(request):
        return None
    return BODY


class AppHTTPServer(GuardedHTTPServer):
    """The app port's HTTP server, plus what a graceful drain needs."""

    def stop_accepting(self) -> list:
        """Stop taking new connections but keep the listening sockets open (for a
        restart that hands them to the next process); returns them."""
        return stop_accepting_on(self)

    def close_idle_connections(self, busy: set, spare_unused: Any = None) -> int:
        """Close connections without a request in progress; with ``spare_unused`` (the
        connections that ever sent a request), only those that did: keep-alive ones."""
        idle = [
            conn
            for conn in open_connections(self)
            if conn not in busy and (spare_unused is None or conn in spare_unused)
        ]
        for conn in idle:
            conn.stream.close()
        return len(idle)

    def fresh_connections(self, used: Any) -> int:
        """Open connections that have not sent a request yet."""
        return sum(1 for conn in open_connections(self) if conn not in used)


class RequestRouter(httputil.HTTPServerConnectionDelegate):
    """Chooses, per request, who answers it."""

    def __init__(
        self,
        state: ServerState,
        container: Any,
        probe_app: Any = None,
        probe_paths: frozenset[str] = frozenset(),
        file_app: Any = None,
        file_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.state = state
        self.container = container
        self.probe_app = probe_app
        self.probe_paths = probe_paths
        self.file_app = file_app
        self.file_prefixes = file_prefixes

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return RequestDelegate(self, server_conn, request_conn)

    def tornado_app_for(self, path: str) -> Any:
        if self.probe_app is not None:
            plain = path.partition("?")[0].rstrip("/") or "/"
            if plain in self.probe_paths:
                return self.probe_app
        if self.file_app is not None and path.startswith(self.file_prefixes):
            return self.file_app
        return None


class RequestDelegate(httputil.HTTPMessageDelegate, ResponseSink):
    __slots__ = (
        "router",
        "server_conn",
        "conn",
        "inner",
        "start_line",
        "headers",
        "chunks",
        "size",
        "started",
        "closed",
        "status",
        "done",
        "streaming",
        "route",
        "sent",
        "on_gone",
        "client",
        "spooled",
    )

    def __init__(
        self, router: RequestRouter, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> None:
        self.router = router
        self.server_conn = server_conn
        # Tornado's HTTP server makes HTTP1Connections only.
        self.conn = cast(HTTP1Connection, request_conn)
        self.inner: httputil.HTTPMessageDelegate | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.closed = False
        self.done = False
        self.streaming = False
        self.status = 0
        self.route = "unmatched"  # until the worker names the matched URL pattern
        self.sent = 0  # bytes of response body written
        self.on_gone = None
        self.client = None
        self.spooled: BinaryIO | None = None  # the body's file, once it is large

    # -- reading the request (on the loop) ----------------------------------------------

    def headers_received(  # type: ignore[override]  # a server reads requests only
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        router = self.router
        state = router.state
        self.start_line = start_line
        self.headers = headers
        self.started = time.perf_counter()
        state.request_began(self.conn, self.server_conn)
        # Tornado parses only HTTP/1.x request lines: the version takes 8 bytes, the
        # two spaces 2.
        if len(start_line.path) + len(start_line.method) + 10 > state.max_request_line:
            # The access log shows the start of the URL only.
            self.start_line = start_line._replace(path=start_line.path[:100] + "...")
            self._reply_and_close(414, b"Request line too long\n")
            return None
        if header_field_count(headers) > state.max_headers:
            self._reply_and_close(431, b"Too many header fields\n")
            return None
        app = router.tornado_app_for(start_line.path)
        if app is not None:
            refusal = app.refusal(start_line, headers)
            if refusal is not None:  # a body sent to the probes or the files
                self._refuse(*refusal)
                return None
            self.inner = app.start_request(self.server_conn, self.conn)
            self._finish_tracking_on_response_end()
            return self.inner.headers_received(start_line, headers)
        if not state.serving:
            # Only possible when the probes share the app port: the app is not up yet.
            self._reply_and_close(503, b"Service starting\n")
            return None
        length = announced_length(headers)
        if length is not None and length > state.max_body_size:
            self._refuse(413, "Request body too large")
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.inner is not None:
            return self.inner.data_received(chunk)
        if self.done:
            return None
        self.size += len(chunk)
        state = self.router.state
        if self.size > state.max_body_size:
            # A chunked body that grew past the limit.
            self._drop_body()
            self._reply_and_close(413, b"Request body too large\n")
            return None
        try:
            if self.spooled is not None:
                self.spooled.write(chunk)
            elif self.size > state.spool_above:
                self.chunks.append(chunk)
                self.spooled = spool(state.spool_directory, self.chunks)
                self.chunks = []
            else:
                self.chunks.append(chunk)
        except OSError as error:
            self._drop_body()
            logger.error(
                "Answered 503 to %s %s: its body (%d bytes so far) could not be stored in %s: %s",
                self.start_line.method,
                self.start_line.path[:100],
                self.size,
                state.spool_directory or tempfile.gettempdir(),
                error,
            )
            self._reply_and_close(503, b"Request body could not be stored\n")
        return None

    def _drop_body(self) -> None:
        self.chunks = []
        if self.spooled is not None:
            self.spooled.close()
            self.spooled = None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()
            return
        if self.done:
            return
        state = self.router.state
        body: Body
        if self.spooled is not None:
            body, self.spooled = rewound(self.spooled), None  # the container closes it
        else:
            body = b"".join(self.chunks)
            self.chunks = []
        # Hear about a client that goes away while its request waits or runs.
        self.conn.set_close_callback(self.on_connection_close)
        self.router.container.serve(
            self.start_line, self.headers, body, self.conn.context, state.port, self
        )

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()
        self.closed = True
        self._drop_body()  # a body cut off before its end: no application got it
        if self.on_gone is not None:
            self.on_gone()
        self._end()

    # -- writing the response (on the loop, called from the worker) ---------------------

    @property
    def client_gone(self) -> bool:
        return self.closed

    def _response_head(
        self, status: str, header_list: list[tuple[str, str]], body: bytes | None = None
    ) -> tuple[httputil.ResponseStartLine, httputil.HTTPHeaders] | None:
        """The status line and headers to write, checked one by one, and against the
        body of a whole response; None after answering 500 instead, when HTTP cannot
        carry the application's: its client must not be left waiting."""
        try:
            start_line, headers = self._start_line(status), self._headers(header_list)
            if body is not None:
                self._check_length(headers, len(body))
            return start_line, headers
        except InvalidResponse as error:
            logger.error(
                "Answered 500 to %s %s instead of the application's response: %s",
                self.start_line.method,
                self.start_line.path,
                error,
            )
            self.send_whole(
                "500 Internal Server Error",
                [("Content-Type", "text/plain")],
                b"Internal Server Error\n",
            )
            return None

    def _whole_response(
        self, status: str, header_list: list[tuple[str, str]], body: bytes
    ) -> bytes | None:
        """The status line and headers to write before the body, for the usual case:
        an HTTP/1.1 request, a status with a body, valid headers, no framing headers
        but a Content-Length that matches. None for anything else: Tornado's
        write_headers frames that, after _response_head has checked it line by line.

        About half of the event loop's time per request went to writing the response
        (py-spy): building Tornado's HTTPHeaders, then its lines, checking them again.
        Here the lines are joined once, checked in one pass, and written whole: 6% fewer
        instructions per /plain request (callgrind, bench/results/profile-plain.md).
        """
        request = self.start_line
        if request.version != "HTTP/1.1" or self.conn.stream.closed():
            return None
        try:
            code = int(status[:3])
            if status[3:4] != " " or not 100 <= code < 600 or without_body(code):
                return None
            lines = ["HTTP/1.1 ", status, "\r\n"]
            for name, value in header_list:
                if name not in _valid_field_names:
                    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
                        return None
                    if len(_valid_field_names) < VALID_FIELD_NAMES_KEPT:
                        _valid_field_names.add(name)
                lines.append(name)
                lines.append(": ")
                lines.append(value)
                lines.append("\r\n")
            text = "".join(lines)
        except (TypeError, ValueError):
            return None
        count = (len(lines) + 1) // 4  # the status line and each header line
        if (
            text.count("\n") != count
            or text.count("\r") != count
            or FORBIDDEN_IN_RESPONSE_HEAD.search(text)
        ):
            return None
        names = text.lower()
        if "\ntransfer-encoding:" in names or "\nconnection:" in names:
            return None
        length = str(len(body))
        if "\ncontent-length:" in names:
            given = CONTENT_LENGTH_LINE.search(text)
            if given is None or given.group(1) != length or names.count("\ncontent-length:") > 1:
                return None
        else:
            text += "Content-Length: " + length + "\r\n"
        if "\ndate:" not in names:
            text += "Date: " + http_date_now() + "\r\n"
        if self.router.state.draining:
            self._close_after_response()
        if closes_after_response(self.conn):
            text += "Connection: close\r\n"
        self.status = code
        return (text + "\r\n").encode("latin-1")

    def _start_line(self, status: str) -> httputil.ResponseStartLine:
        try:
            code, _, reason = status.partition(" ")
            self.status = int(code)
        except (AttributeError, ValueError):
            raise InvalidResponse(f"invalid status {status!r}") from None
        if FORBIDDEN_IN_FIELD_VALUE.search(reason):
            raise InvalidResponse(f"invalid status {status!r}")
        return httputil.ResponseStartLine("HTTP/1.1", self.status, reason)

    def _check_length(self, headers: httputil.HTTPHeaders, body_length: int) -> None:
        """A Content-Length the body does not match would leave the client waiting
        for bytes that never come, or read the rest as its next response."""
        given = headers.get("Content-Length")
        if given is None or self.start_line.method == "HEAD":
            return
        if without_body(self.status):
            return
        if not (given.isascii() and given.isdigit()) or int(given) != body_length:
            raise InvalidResponse(
                f"Content-Length {given!r} is not the length of the body, {body_length}"
            )

    def _headers(self, header_list: list[tuple[str, str]]) -> httputil.HTTPHeaders:
        headers = httputil.HTTPHeaders()
        for name, value in header_list:
            if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
                raise InvalidResponse(f"invalid header name {name!r}")
            if not isinstance(value, str) or FORBIDDEN_IN_FIELD_VALUE.search(value):
                raise InvalidResponse(f"invalid value of header {name}: {value!r}")
            # Checked here (Tornado 6.4's add() checks nothing), so set, not add()
            # (which checks again from 6.5 on); a repeated name (Set-Cookie) needs
            # add() for a line per value.
            if name in headers:
                headers.add(name, value)
            else:
                headers[name] = value
        if "Date" not in headers:
            headers["Date"] = http_date_now()
        if self.router.state.draining:
            # Tell the client to take its next request elsewhere.
            self._close_after_response()
        return headers

    def send_whole(self, status: str, header_list: list[tuple[str, str]], body: bytes) -> None:
        if self.closed:
            return
        conn = self.conn
        head = self._whole_response(status, header_list, body)
        if head is None:
            checked = self._response_head(status, header_list, body)
            if checked is None:
                return
            start_line, headers = checked
            if without_body(self.status):
                body = b""
            elif "Content-Length" not in headers and "Transfer-Encoding" not in headers:
                headers["Content-Length"] = str(len(body))
        if self.start_line.method == "HEAD":
            body = b""
        self.sent = len(body)
        try:
            if head is None:
                written = conn.write_headers(start_line, headers, body)
            else:
                written = self._write_whole(head, body)
            conn.finish()
        except Exception:
            logger.exception("Error writing the response")
            conn.close()
            written = None
        self._end_once_written(written)

    def _write_whole(self, head: bytes, body: bytes) -> Future:
        """Write a response whose head _whole_response built; returns the future of
        its last byte."""
        stream = self.conn.stream
        if len(body) < JOIN_BELOW:
            written = stream.write(head + body)  # one write, one system call
        else:
            # Not joined: a copy of a large body would double what the response
            # holds in memory while the client reads it.
            stream.write(head)
            written = stream.write(body)
        wrote_whole_response(self.conn, written)
        return written

    def start_stream(self, status: str, header_list: list[tuple[str, str]]) -> None:
        if self.closed:
            return
        head = self._response_head(status, header_list)
        if head is None:
            self.closed = True  # answered: the worker's chunks have nowhere to go
            return
        self.streaming = True
        self.conn.write_headers(*head)

    async def write_chunk(self, chunk: bytes) -> None:
        if self.closed:
            raise StreamClosedError()
        if self.start_line.method != "HEAD":
            self.sent += len(chunk)
            await self.conn.write(chunk)

    def finish_stream(self) -> None:
        if not self.closed:
            try:
                self.conn.finish()
            except Exception:  # e.g. fewer bytes than Content-Length: the connection closes
                logger.exception("Error finishing the streamed response")
        self._end_once_written()

    def fail(self) -> None:
        if self.streaming:
            self.conn.close()
            self._end()
            return
        self.send_whole(
            "500 Internal Server Error",
            [("Content-Type", "text/plain")],
            b"Internal Server Error\n",
        )

    # -- helpers --------------------------------------------------------------------------

    def _close_after_response(self) -> None:
        close_after_response(self.conn)

    def _reply_and_close(self, code: int, body: bytes) -> None:
        self.done = True
        self._close_after_response()
        headers = httputil.HTTPHeaders(
            {"Content-Type": "text/plain", "Content-Length": str(len(body))}
        )
        reason = httputil.responses.get(code, "Error")
        self.sent = len(body)
        self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", code, reason), headers, body)
        self.conn.finish()
        self.status = code
        self._end()

    def _refuse(
        self, status: int, message: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Answer from the headers alone, without reading the body into memory."""
        self.done = True
        self.status = status
        refuse_and_close(self.conn, self.headers, status, message, extra_headers)
        self._end()

    def _finish_tracking_on_response_end(self) -> None:
        # Requests answered by a Tornado application (probes, files) end when that
        # application calls finish() on the connection.
        original_finish = self.conn.finish

        def finish() -> None:
            original_finish()
            self._end_once_written()

        self.conn.finish = finish  # type: ignore[method-assign]

    def _end_once_written(self, written: Future | None = None) -> None:
        """End the request once its last byte is written (``written`` resolves then), not
        once it is queued: a drain and an in-place restart wait for the requests in
        flight, and a response ended early had its connection closed under a client
        still reading it (4 of 8 MB arrived)."""
        if written is None:
            stream = self.conn.stream
            if stream is None or stream.closed():
                self._end()
                return
            written = stream.write(b"")  # resolves once all queued before it is written
        if written.done():
            self._end()
        else:
            written.add_done_callback(lambda _: self._end())

    def _end(self) -> None:
        state = self.router.state
        if not state.request_ended(self.conn):
            return  # already counted
        if self.inner is not None:
            return  # probe and file requests are neither logged nor counted as app requests
        if self.status:
            state.app_request_done(
                self.start_line,
                self.status,
                # Typed object; Tornado's HTTP server sets one with remote_ip.
                self.client or self.conn.context.remote_ip,  # type: ignore[attr-defined]
                time.perf_counter() - self.started,
                self.route,
                self.headers,
                self.sent,
            )
