"""Hurricane's HTTP server on Tornado: accepting connections (a bounded number per
wake-up, a pause when descriptors run out), the sweep that times each connection's
phase (idle, headers, body, a response the client does not take), what a drain needs
(stop accepting, close idle connections) and the access log.

What each request gets is decided in :mod:`hurricane.http.exchange`; when to accept,
drain or stop, in :mod:`hurricane.serve.server`.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream, UnsatisfiableReadError

from hurricane.http.response import closing_error_response
from hurricane.http.tornado_compat import (
    adopt_stream,
    body_read,
    buffered_bytes,
    listen_with,
    open_connections,
    start_line_parsed,
    stop_timing_headers,
)
from hurricane.http.tornado_compat import stop_accepting as stop_accepting_on

if TYPE_CHECKING:
    pass


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


# Phases of a connection that the sweep times (GuardedHTTPServer.sweep).
IDLE, HEADERS, BODY, WRITE = "idle", "headers", "body", "write"
# How often, at most, the sweep looks at the open connections; a connection is cut off
# between its timeout and its timeout plus two sweep intervals.
SWEEP_INTERVAL = 1.0
# Before the connection of a too large header block closes, up to this much of what the
# client already sent is read and thrown away: closing with unread data makes the kernel
# reset the connection, and the 431 could be lost (as with refusals.DISCARD_LIMIT).
HEADER_OVERFLOW_DISCARD = 256 * 1024


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
            sock.send(closing_error_response(431, "Request header fields too large"))
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
