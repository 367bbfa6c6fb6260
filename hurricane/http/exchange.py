"""One request's exchange: the router that picks who answers it (the probes when
they share the app port, static or media files, or the application's container) and
the delegate that reads its body (spooled to disk once large), checks and writes the
application's response, and counts the request as ended once its last byte is written.

:class:`ResponseSink` is what the WSGI and ASGI containers (hurricane.django) write a
response to.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from asyncio import Future
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from hurricane.http.body import Body, rewound, spool
from hurricane.http.refusals import announced_length, refuse_and_close
from hurricane.http.tornado_compat import (
    close_after_response,
    closes_after_response,
    header_field_count,
    wrote_whole_response,
)

if TYPE_CHECKING:
    from hurricane.serve.server import ServerState


logger = logging.getLogger("hurricane.server.general")


class ResponseSink:
    """What the worker hands its results to; implemented on the loop side by the
    app server's request delegate."""

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
