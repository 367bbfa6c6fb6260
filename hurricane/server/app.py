"""The app server's HTTP side: one delegate per request, routing it to the probes
(when they share the app port), to static or media files, or to Django.

This module speaks HTTP only; when to accept, drain or stop is decided in
:mod:`hurricane.server.runtime`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError

from hurricane.server.wsgi import ResponseSink

if TYPE_CHECKING:
    from hurricane.server.runtime import ServerState

access_logger = logging.getLogger("hurricane.access")
logger = logging.getLogger("hurricane.server")

# A body announced larger than the limit is still read and thrown away, up to this
# many bytes, before the connection closes: closing with unread data makes the
# kernel reset the connection, and the client would never see the 413.
DISCARD_LIMIT = 8 * 1024 * 1024
DISCARD_TIMEOUT = 5.0


def log_access(status: int, method: str, path: str, remote_ip: str, seconds: float) -> None:
    """The one access-log line format, for app, file and (with LOG_PROBES) probe requests."""
    access_logger.info("%d %s %s (%s) %.2fms", status, method, path, remote_ip, seconds * 1000.0)


def log_tornado_request(handler: Any) -> None:
    """``log_function`` of Hurricane's Tornado applications."""
    request = handler.request
    log_access(
        handler.get_status(), request.method, request.uri, request.remote_ip, request.request_time()
    )


_date_cache: list = [0, ""]


def http_date_now() -> str:
    """The Date header HTTP/1.1 requires, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, httputil.format_timestamp(now)
    return _date_cache[1]


class AppHTTPServer(HTTPServer):
    """Tornado's HTTP server, plus what a graceful drain needs."""

    def stop_accepting(self) -> list:
        """Stop taking new connections but keep the listening sockets open (for a
        restart that hands them to the next process); returns them."""
        for remove_handler in self._handlers.values():
            remove_handler()
        self._handlers.clear()
        return list(self._sockets.values())

    def close_idle_connections(self, busy: set, spare_unused: Any = None) -> int:
        """Close connections without a request in progress; with ``spare_unused`` (the
        connections that ever sent a request), only those that did: keep-alive ones."""
        idle = [
            conn
            for conn in self._connections
            if conn not in busy and (spare_unused is None or conn in spare_unused)
        ]
        for conn in idle:
            conn.stream.close()
        return len(idle)

    def fresh_connections(self, used: Any) -> int:
        """Open connections that have not sent a request yet."""
        return sum(1 for conn in self._connections if conn not in used)


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
        "on_gone",
    )

    def __init__(
        self, router: RequestRouter, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> None:
        self.router = router
        self.server_conn = server_conn
        self.conn = request_conn
        self.inner: httputil.HTTPMessageDelegate | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.closed = False
        self.done = False
        self.streaming = False
        self.status = 0
        self.route = "unmatched"  # until the worker names the matched URL pattern
        self.on_gone = None

    # -- reading the request (on the loop) ----------------------------------------------

    def headers_received(
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        router = self.router
        state = router.state
        self.start_line = start_line
        self.headers = headers
        self.started = time.perf_counter()
        state.request_began(self.conn, self.server_conn)
        app = router.tornado_app_for(start_line.path)
        if app is not None:
            self.inner = app.start_request(self.server_conn, self.conn)
            self._finish_tracking_on_response_end()
            return self.inner.headers_received(start_line, headers)
        if not state.serving:
            # Only possible when the probes share the app port: the app is not up yet.
            self._reply_and_close(503, b"Service starting\n")
            return None
        length = headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > state.max_body_size:
            return self._reject_oversized(int(length))
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.inner is not None:
            return self.inner.data_received(chunk)
        if self.done:
            return None
        self.size += len(chunk)
        if self.size > self.router.state.max_body_size:
            # A chunked body that grew past the limit.
            self.chunks = []
            self._reply_and_close(413, b"Request body too large\n")
            return None
        self.chunks.append(chunk)
        return None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()
            return
        if self.done:
            return
        state = self.router.state
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
        if self.on_gone is not None:
            self.on_gone()
        self._end()

    # -- writing the response (on the loop, called from the worker) ---------------------

    @property
    def client_gone(self) -> bool:
        return self.closed

    def _start_line(self, status: str) -> httputil.ResponseStartLine:
        code, _, reason = status.partition(" ")
        self.status = int(code)
        return httputil.ResponseStartLine("HTTP/1.1", self.status, reason)

    def _headers(self, header_list: list[tuple[str, str]]) -> httputil.HTTPHeaders:
        headers = httputil.HTTPHeaders()
        for name, value in header_list:
            headers.add(name, value)
        if "Date" not in headers:
            headers["Date"] = http_date_now()
        if self.router.state.draining:
            # Tell the client to take its next request elsewhere.
            self._close_after_response()
        return headers

    def send_whole(self, status: str, header_list: list[tuple[str, str]], body: bytes) -> None:
        if self.closed:
            return
        start_line = self._start_line(status)
        headers = self._headers(header_list)
        if self.status in (204, 304) or 100 <= self.status < 200:
            body = b""
        elif "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            headers["Content-Length"] = str(len(body))
        if self.start_line.method == "HEAD":
            body = b""
        try:
            self.conn.write_headers(start_line, headers, body)
            self.conn.finish()
        except Exception:
            logger.exception("Error writing the response")
            self.conn.close()
        self._end()

    def start_stream(self, status: str, header_list: list[tuple[str, str]]) -> None:
        if self.closed:
            return
        self.streaming = True
        self.conn.write_headers(self._start_line(status), self._headers(header_list))

    async def write_chunk(self, chunk: bytes) -> None:
        if self.closed:
            raise StreamClosedError()
        if self.start_line.method != "HEAD":
            await self.conn.write(chunk)

    def finish_stream(self) -> None:
        if not self.closed:
            try:
                self.conn.finish()
            except Exception:  # e.g. fewer bytes than Content-Length: the connection closes
                logger.exception("Error finishing the streamed response")
        self._end()

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
        # Tornado has no public switch for this; it closes the connection after the
        # response and adds "Connection: close" when this flag is set.
        self.conn._disconnect_on_finish = True  # type: ignore[attr-defined]

    def _reply_and_close(self, code: int, body: bytes) -> None:
        self.done = True
        self._close_after_response()
        headers = httputil.HTTPHeaders(
            {"Content-Type": "text/plain", "Content-Length": str(len(body))}
        )
        reason = httputil.responses.get(code, "Error")
        self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", code, reason), headers, body)
        self.conn.finish()
        self.status = code
        self._end()

    def _reject_oversized(self, length: int) -> None:
        """Answer 413 to a body announced too large, without reading it into memory."""
        self.done = True
        self.status = 413
        stream = self.conn.detach()
        body = b"Request body too large\n"
        response = (
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        discard = 0
        if self.headers.get("Expect", "").lower() != "100-continue":
            discard = length if length <= DISCARD_LIMIT else 0
        self._end()
        stream.io_loop.add_future(
            asyncio.ensure_future(_answer_and_discard(stream, response, discard)),
            lambda future: future.exception(),
        )

    def _finish_tracking_on_response_end(self) -> None:
        # Requests answered by a Tornado application (probes, files) end when that
        # application calls finish() on the connection.
        original_finish = self.conn.finish

        def finish() -> None:
            original_finish()
            self._end()

        self.conn.finish = finish  # type: ignore[method-assign]

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
                self.conn.context.remote_ip,
                time.perf_counter() - self.started,
                self.route,
            )


async def _answer_and_discard(stream: Any, response: bytes, discard: int) -> None:
    try:
        await stream.write(response)
        if discard:
            await asyncio.wait_for(_read_up_to(stream, discard), DISCARD_TIMEOUT)
    except (StreamClosedError, asyncio.TimeoutError):
        pass
    finally:
        stream.close()


async def _read_up_to(stream: Any, size: int) -> None:
    remaining = size
    while remaining > 0:
        data = await stream.read_bytes(min(remaining, 65536), partial=True)
        remaining -= len(data)
