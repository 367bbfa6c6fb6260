"""One request's exchange: the router that picks who answers it (the probes when
they share the app port, static or media files, or the application's container) and
the delegate that reads its body (spooled to disk once large), checks and writes the
application's response, and counts the request as ended once its last byte is written.

:class:`ResponseSink` is what the WSGI and ASGI containers (hurricane.django) read a
request from and write its response to.
"""

from __future__ import annotations

import logging
import tempfile
import time
from asyncio import Future
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from hurricane.http.body import Body, rewound, spool
from hurricane.http.forwarded import TrustedProxies
from hurricane.http.refusals import announced_length, refuse_and_close
from hurricane.http.response import (
    Head,
    InvalidResponse,
    closing_error_response,
    error_response,
    response_head,
)
from hurricane.http.tornado_compat import (
    close_after_response,
    closes_after_response,
    has_header,
    header_field_count,
    wrote_response_head,
)
from hurricane.http.websocket import asks_for_websocket, handshake_problem

if TYPE_CHECKING:
    from hurricane.serve.server import ServerState


logger = logging.getLogger("hurricane.server.general")


class ResponseSink:
    """One request's exchange as a container sees it: the request, read whole and its
    client decided, and what the worker hands its results to; implemented on the loop
    side by the app server's request delegate. The container gets the body apart."""

    start_line: httputil.RequestStartLine
    headers: httputil.HTTPHeaders
    #: The connection's (Tornado's ``HTTP1Connection.context``): ``remote_ip``,
    #: ``protocol``, ``address``.
    context: Any
    server_port: int
    #: The client's address and the scheme it used: the peer's, or what trusted
    #: proxies say in X-Forwarded-For and X-Forwarded-Proto (hurricane.http.forwarded).
    remote_ip: str
    scheme: str

    route: str = ""
    #: The client's address when a trusted proxy named it (for the access log).
    client: str | None = None
    #: Called on the loop when the client goes away (set by the ASGI bridge).
    on_gone: Callable[[], Any] | None = None

    def send_whole(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        raise NotImplementedError

    def start_stream(self, status: str, headers: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    async def write_chunk(self, chunk: bytes) -> None:
        raise NotImplementedError

    def finish_stream(self) -> None:
        raise NotImplementedError

    def fail(self) -> None:
        """The application failed before a response could be started."""
        raise NotImplementedError

    @property
    def client_gone(self) -> bool:
        raise NotImplementedError


# A whole response's head and body go out in one write below this size; a larger
# body is written as it is, after its head, rather than copied.
JOIN_BELOW = 64 * 1024


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
        # Whose X-Forwarded-* headers are believed; None (the default: no one's) costs
        # one attribute test per request.
        self.trusted_proxies: TrustedProxies | None = None
        # The Tornado application that answers WebSocket handshakes (an ASGI
        # application that takes them: hurricane.django.websocket); None: every
        # handshake gets 400.
        self.websocket_app: Any = None

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
        "counted",
        "on_gone",
        "client",
        "spooled",
        "body_follows",
        "context",
        "server_port",
        "remote_ip",
        "scheme",
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
        self.counted = False  # logged and in the metrics
        self.on_gone = None
        self.client = None
        self.spooled: BinaryIO | None = None  # the body's file, once it is large
        self.body_follows = False  # a streamed response's chunks are sent

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
            self.answer_error(414, "Request line too long", close=True)
            return None
        if header_field_count(headers) > state.max_headers:
            self.answer_error(431, "Too many header fields", close=True)
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
            self.answer_error(503, "Service starting", close=True)
            return None
        # The WebSocket check runs only when an Upgrade header came, as on almost no
        # request.
        if (
            start_line.method == "GET"
            and has_header(headers, "Upgrade")
            and asks_for_websocket(headers)
        ):
            return self._websocket(start_line, headers)
        length = announced_length(headers)
        if length is not None and length > state.max_body_size:
            self._refuse(413, "Request body too large")
        return None

    def _websocket(
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> Awaitable[None] | None:
        """A WebSocket handshake: refused from its headers when nothing here can take
        it, else handed to the WebSocket application (as probes and files are to
        theirs)."""
        router = self.router
        app = router.websocket_app
        if app is None:
            # Not a 200 from a view that ignores the Upgrade header: the client would
            # wait for frames that never come.
            self._refuse(
                400, "No WebSockets here: the application serves HTTP only (no ASGI_APPLICATION)"
            )
            return None
        problem = handshake_problem(start_line, headers)
        if problem is not None:
            self._refuse(*problem)
            return None
        if router.state.draining:
            self._refuse(503, "Shutting down: no new WebSockets")
            return None
        self.inner = app.start_request(self.server_conn, self.conn)
        self._finish_tracking_on_response_end()
        return self.inner.headers_received(start_line, headers)

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
            self.answer_error(413, "Request body too large", close=True)
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
            self.answer_error(503, "Request body could not be stored", close=True)
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
        router = self.router
        body: Body
        if self.spooled is not None:
            body, self.spooled = rewound(self.spooled), None  # the container closes it
        else:
            body = b"".join(self.chunks)
            self.chunks = []
        # Hear about a client that goes away while its request waits or runs.
        conn = self.conn
        conn.set_close_callback(self.on_connection_close)
        self.context = context = conn.context
        self.server_port = router.state.port
        remote_ip, scheme = context.remote_ip, context.protocol  # type: ignore[attr-defined]
        if router.trusted_proxies is not None:
            remote_ip, scheme = router.trusted_proxies.client_and_scheme(
                remote_ip, scheme, self.headers
            )
            self.client = remote_ip
        self.remote_ip, self.scheme = remote_ip, scheme
        router.container.serve(body, self)

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

    def _head(
        self, status: str, header_list: list[tuple[str, str]], body_length: int | None
    ) -> Head | None:
        """The checked head of the application's response (:mod:`hurricane.http.response`),
        of a whole body of ``body_length`` bytes or a streamed one (None); None after
        answering 500 instead, when HTTP cannot carry it: its client must not be left
        waiting."""
        request = self.start_line
        version = request.version
        # An HTTP/1.0 client's connection stays open only when it asks for it.
        keep_alive = (
            version == "HTTP/1.0" and self.headers.get("Connection", "").lower() == "keep-alive"
        )
        if self.router.state.draining:
            # Tell the client to take its next request elsewhere.
            self._close_after_response()
        try:
            head = response_head(
                status,
                header_list,
                body_length,
                request.method,
                version,
                closes_after_response(self.conn),
                keep_alive,
            )
        except InvalidResponse as error:
            logger.error(
                "Answered 500 to %s %s instead of the application's response: %s",
                request.method,
                request.path,
                error,
            )
            self.answer_error(500, "Internal Server Error")
            return None
        self.status = head.code
        if head.close:
            self._close_after_response()
        return head

    def send_whole(self, status: str, header_list: list[tuple[str, str]], body: bytes) -> None:
        if self.closed:
            return
        head = self._head(status, header_list, len(body))
        if head is None:
            return
        if not head.body:
            body = b""
        conn = self.conn
        stream = conn.stream
        self.sent = len(body)
        self._count()
        try:
            if stream.closed():
                written = None
            elif len(body) < JOIN_BELOW:
                written = stream.write(head.data + body)  # one write, one system call
            else:
                # Not joined: a copy of a large body would double what the response
                # holds in memory while the client reads it.
                stream.write(head.data)
                written = stream.write(body)
            if written is not None:
                wrote_response_head(conn, written)
                conn.finish()
        except Exception:
            logger.exception("Error writing the response")
            conn.close()
            written = None
        self._end_once_written(written)

    def start_stream(self, status: str, header_list: list[tuple[str, str]]) -> None:
        if self.closed:
            return
        head = self._head(status, header_list, None)
        if head is None:
            self.closed = True  # answered: the worker's chunks have nowhere to go
            return
        stream = self.conn.stream
        if stream.closed():
            self.closed = True
            return
        self.streaming = True
        self.body_follows = head.body
        wrote_response_head(self.conn, stream.write(head.data), head.chunked, head.length)

    async def write_chunk(self, chunk: bytes) -> None:
        if self.closed:
            raise StreamClosedError()
        if self.body_follows:  # none after HEAD, nor for 1xx, 204 and 304
            self.sent += len(chunk)
            await self.conn.write(chunk)

    def finish_stream(self) -> None:
        self._count()
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
        self.answer_error(500, "Internal Server Error")

    # -- helpers --------------------------------------------------------------------------

    def answer_error(
        self,
        code: int,
        message: str,
        close: bool = False,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer ``code`` with ``message`` (:func:`~hurricane.http.response.error_response`)
        instead of the application; ``close``: close the connection after it, and read
        nothing more of the request."""
        if close:
            self.done = True
            self._close_after_response()
        self.send_whole(*error_response(code, message, extra_headers))

    def _close_after_response(self) -> None:
        close_after_response(self.conn)

    def _refuse(
        self, status: int, message: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Answer from the headers alone, without reading the body into memory."""
        self.done = True
        self.status = status
        refuse_and_close(
            self.conn, self.headers, closing_error_response(status, message, extra_headers)
        )
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
            return  # already ended
        self._count()

    def _count(self) -> None:
        """Log the answered app request and put it in the metrics: before its last
        bytes go out, so that a client that has its response and then asks /metrics
        (served on the probe server's own thread) finds it counted."""
        if self.counted or self.inner is not None or not self.status:
            return  # probe and file requests are neither logged nor counted
        self.counted = True
        self.router.state.app_request_done(
            self.start_line,
            self.status,
            # Typed object; Tornado's HTTP server sets one with remote_ip.
            self.client or self.conn.context.remote_ip,  # type: ignore[attr-defined]
            time.perf_counter() - self.started,
            self.route,
            self.headers,
            self.sent,
        )
