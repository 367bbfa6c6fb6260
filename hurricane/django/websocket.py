"""The ASGI bridge for WebSockets: a connection's ``websocket`` scope, its
``receive`` and ``send``, on the same event loop as the HTTP requests.

A handshake that can be served (:func:`hurricane.http.websocket.handshake_problem`)
reaches a Tornado :class:`ASGIWebSocketHandler` through a small Tornado application
of its own, as the probes and files do. The handler starts the application with
``websocket.connect`` and waits for its answer before it answers the client: 101 on
``websocket.accept`` (with the subprotocol and headers it names), 403 on a
``websocket.close``, the application's own response on
``websocket.http.response.*``, 500 when it fails or returns first. Frames are then
Tornado's (:class:`~hurricane.http.tornado_compat.StrictWebSocketProtocol`).

Backpressure both ways: messages wait for the application in a queue of
INBOX_BOUND; while it is full Tornado reads no further frame, so a client sending
faster than the application takes leaves its bytes in the kernel. Each
``websocket.send`` returns once the stream took its frame: a client that does not
read holds its application back instead of growing the process's memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tornado.web
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketHandler

from hurricane.django.asgi import ASGI_VERSIONS, build_scope
from hurricane.http.forwarded import TrustedProxies
from hurricane.http.response import error_response
from hurricane.http.tornado_compat import (
    StrictWebSocketProtocol,
    websocket_protocol,
    write_websocket_message,
)
from hurricane.http.websocket import GOING_AWAY, OpenWebSockets, WebSocketLimits

logger = logging.getLogger("hurricane.server.general")

#: Messages from the client that wait for the application before Tornado stops
#: reading: a few, so that a burst does not stall on every message, but bounded.
INBOX_BOUND = 16

#: Bytes a WebSocket's stream asks the kernel for per read (see open()).
READ_CHUNK = 16384

#: What ``websocket.disconnect`` says when no close frame came: the connection dropped.
ABNORMAL_CLOSURE = 1006
NO_STATUS = 1005
INTERNAL_ERROR = 1011


def close_reason(reason: str | None) -> str | None:
    """A close frame's reason as it may go out: a control frame carries at most 125
    bytes, two of them the code, so a longer reason is cut (at a character's end):
    sent whole, the client would take the frame for a protocol error."""
    if not reason:
        return None
    encoded = reason.encode("utf-8")
    if len(encoded) <= 123:
        return reason
    return encoded[:123].decode("utf-8", errors="ignore")


class ClientDisconnected(OSError):
    """``send`` on a WebSocket that is closed (the ASGI spec asks for an OSError)."""


class ASGIMessageError(RuntimeError):
    """The application sent a WebSocket message that does not fit the connection's state."""


class WebSocketBridge:
    """What every WebSocket of a serving process shares: the application, the
    limits, the proxies believed, the open connections and the metrics."""

    def __init__(
        self,
        application: Any,
        limits: WebSocketLimits,
        connections: OpenWebSockets,
        port: int,
        trusted_proxies: TrustedProxies | None = None,
        metrics: Any = None,
        lifespan_state: dict[str, Any] | None = None,
    ) -> None:
        self.application = application
        self.limits = limits
        self.connections = connections
        self.port = port
        self.trusted_proxies = trusted_proxies
        self.metrics = metrics
        self.lifespan_state = lifespan_state

    def scope_of(self, handler: ASGIWebSocketHandler) -> dict[str, Any]:
        request = handler.request
        context = request.connection.context  # type: ignore[union-attr]
        remote_ip, scheme = context.remote_ip, context.protocol
        if self.trusted_proxies is not None:
            remote_ip, scheme = self.trusted_proxies.client_and_scheme(
                remote_ip, scheme, request.headers
            )
        view = _HandshakeView(request, context, remote_ip, scheme, self.port)
        scope = build_scope(view)  # type: ignore[arg-type]  # what it reads of a sink
        del scope["method"]
        scope["type"] = "websocket"
        scope["asgi"] = ASGI_VERSIONS
        scope["scheme"] = "wss" if scheme == "https" else "ws"
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        scope["subprotocols"] = [name.strip() for name in offered.split(",") if name.strip()]
        scope["extensions"] = {"websocket.http.response": {}}
        if self.lifespan_state is not None:
            scope["state"] = dict(self.lifespan_state)
        return scope

    def application_for_tornado(self) -> tornado.web.Application:
        from hurricane.http.server import log_tornado_request

        limits = self.limits
        return tornado.web.Application(
            [(r".*", ASGIWebSocketHandler, {"bridge": self})],
            autoreload=False,
            log_function=log_tornado_request,
            websocket_ping_interval=limits.ping_interval or None,
            websocket_ping_timeout=limits.ping_timeout or None,
            websocket_max_message_size=limits.max_message_size,
        )


class _HandshakeView:
    """The handshake request as :func:`hurricane.django.asgi.build_scope` reads a sink."""

    def __init__(
        self, request: Any, context: Any, remote_ip: str, scheme: str, server_port: int
    ) -> None:
        from tornado.httputil import RequestStartLine

        self.start_line = RequestStartLine(request.method, request.uri, request.version)
        self.headers = request.headers
        self.context = context
        self.remote_ip = remote_ip
        self.scheme = scheme
        self.server_port = server_port


class ASGIWebSocketHandler(WebSocketHandler):
    """One WebSocket connection, from its handshake to its close, run through the
    ASGI application."""

    bridge: WebSocketBridge

    def initialize(self, bridge: WebSocketBridge) -> None:
        self.bridge = bridge
        loop = asyncio.get_running_loop()
        self.loop = loop
        # The application's first answer: ("accept", subprotocol, headers),
        # ("close", code, reason), ("response", status, headers, body),
        # ("failed",), ("gone",), ("refused",).
        self.decided: asyncio.Future = loop.create_future()
        self.ended: asyncio.Future = loop.create_future()
        # The connection ("connection_over": closed, or its handshake refused) and
        # the application (returned, with app_error) end apart; the handler is done
        # (ended, out of the registry) once both did.
        self.connection_over = False
        self.app_returned = False
        self.app_error: BaseException | None = None
        self.protocol: StrictWebSocketProtocol | None = None
        # Done once the 101 went out (or the connection ended first): an application
        # may send right after its websocket.accept, before the handler wrote the 101.
        self.handshake_done: asyncio.Future = loop.create_future()
        self.accepted = False
        self.connect_given = False
        self.inbox: list[dict[str, Any]] = []
        self.inbox_at = 0
        self.arrived: asyncio.Future | None = None  # the application waits for a message
        self.space: asyncio.Future | None = None  # Tornado waits for room in the inbox
        self.disconnect: dict[str, Any] | None = None
        self.response_start: dict[str, Any] | None = None
        self.response_body: list[bytes] = []
        self.task: asyncio.Task | None = None
        self.app_closed = False  # the application sent websocket.close

    # -- Tornado's side ------------------------------------------------------------------

    def clear(self) -> None:
        super().clear()
        self.clear_header("Server")  # as Hurricane's own handlers (hurricane.http.handlers)

    def check_origin(self, origin: str) -> bool:
        # The application decides (Channels' AllowedHostsOriginValidator, for one).
        return True

    def get_compression_options(self) -> dict[str, Any] | None:
        return {} if self.bridge.limits.compression else None

    def get_websocket_protocol(self) -> StrictWebSocketProtocol | None:
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        self.protocol = websocket_protocol(
            self,
            self.ping_interval,
            self.ping_timeout,
            self.max_message_size,
            self.get_compression_options(),
        )
        return self.protocol

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        decision = self.decided.result()
        return decision[1] if decision[0] == "accept" else None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        bridge = self.bridge
        if bridge.connections.refusing:
            self._answer(*error_response(503, "Shutting down: no new WebSockets"))
            return
        scope = bridge.scope_of(self)
        bridge.connections.add(self)
        self.task = asyncio.ensure_future(self._run(bridge.application, scope))
        decision = await self.decided
        kind = decision[0]
        if kind == "accept":
            _, subprotocol, headers = decision
            if subprotocol is not None and subprotocol not in scope["subprotocols"]:
                logger.error(
                    "The ASGI application accepted subprotocol %r, which the client did "
                    "not offer (%s); answered 500",
                    subprotocol,
                    scope["subprotocols"],
                )
                self._client_gone(ABNORMAL_CLOSURE)
                self._answer(*error_response(500))
                return
            for name, value in headers:
                self.add_header(name, value)
            await super().get(*args, **kwargs)  # 101, then frames until the close
            # Ended, or refused by Tornado after all (a cross-site Sec-Fetch-Site
            # without an Origin): either way the application hears of it.
            self._client_gone(ABNORMAL_CLOSURE)
        elif kind == "close":
            self._answer(*error_response(403))
        elif kind == "response":
            _, status, headers, body = decision
            self.set_status(status)
            for name, value in headers:
                self.add_header(name, value)
            self.finish(body)
        elif kind == "refused":
            self._answer(*error_response(503, "Shutting down: no new WebSockets"))
        elif kind == "failed":
            self._answer(*error_response(500))
        # "gone": the client left during the handshake; nothing to answer.

    def _answer(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.set_status(int(status[:3]))
        for name, value in headers:
            self.set_header(name, value)
        self.finish(body)

    def on_message(self, message: str | bytes) -> asyncio.Future | None:
        """A whole message from the client (text comes as bytes: see
        StrictWebSocketProtocol). Returns a future while the inbox is full: Tornado
        reads no further frame until it is done."""
        if self.app_closed or self.disconnect is not None:
            return None
        protocol = self.ws_connection
        assert isinstance(message, bytes) and isinstance(protocol, StrictWebSocketProtocol)
        event: dict[str, Any]
        if protocol.message_is_text:
            try:
                event = {"type": "websocket.receive", "text": message.decode("utf-8")}
            except UnicodeDecodeError:
                self.close(1007, "invalid UTF-8 in a text message")
                return None
        else:
            event = {"type": "websocket.receive", "bytes": message}
        if self.bridge.metrics is not None:
            self.bridge.metrics.pending_in += 1
        self.inbox.append(event)
        self._wake_receiver()
        if len(self.inbox) - self.inbox_at >= INBOX_BOUND:
            self.space = self.loop.create_future()
            return self.space
        return None

    def open(self, *args: str, **kwargs: str) -> None:
        """The client has its 101."""
        stream = self.protocol.stream if self.protocol is not None else None
        if stream is not None:
            # Tornado's stream allocates a fresh buffer of this size for every recv
            # (and tries one before waiting for each frame): 64 KiB took 1.3 µs to
            # allocate where 16 KiB takes 0.17 (timeit), on messages mostly far
            # smaller; a larger message takes a few more reads.
            stream.read_chunk_size = READ_CHUNK
        if self.bridge.metrics is not None:
            self.bridge.metrics.opened()
        self.handshake_done.set_result(None)
        if self.app_returned:  # it accepted and returned before the handshake went out
            self._close_for_application()

    def on_close(self) -> None:
        protocol = self.protocol
        code: int
        if self.close_code is not None:
            code = self.close_code
        elif isinstance(protocol, StrictWebSocketProtocol) and protocol.received_close:
            code = NO_STATUS
        elif isinstance(protocol, StrictWebSocketProtocol) and protocol.sent_code is not None:
            code = protocol.sent_code
        else:
            code = ABNORMAL_CLOSURE
        self._client_gone(code, self.close_reason or "")

    def on_finish(self) -> None:
        if not self.accepted:  # a refused handshake: the application is told, if it ran
            self._client_gone(ABNORMAL_CLOSURE)

    def _client_gone(self, code: int, reason: str = "") -> None:
        if self.disconnect is not None:
            return
        self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        self.connection_over = True
        if not self.handshake_done.done():
            self.handshake_done.set_result(None)
        if self.protocol is not None and self.protocol.stream is not None:
            # The handshake went out: the connection counted as open.
            if self.bridge.metrics is not None:
                self.bridge.metrics.closed(code)
        if not self.decided.done():
            self.decided.set_result(("gone",))
        self._wake_receiver()
        if self.space is not None and not self.space.done():
            self.space.set_result(None)
        self._maybe_done()

    # -- the registry's (hurricane.http.websocket.OpenWebSocket) ---------------------------

    @property
    def finished(self) -> asyncio.Future:
        return self.ended

    def go_away(self) -> None:
        if not self.decided.done():
            self.decided.set_result(("refused",))
        elif self.ws_connection is not None:
            self.close(GOING_AWAY, "going away")

    def abort(self) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        if self.ws_connection is not None and self.ws_connection.stream is not None:
            stream = self.ws_connection.stream
        if stream is not None:
            stream.close()
        if self.task is not None:
            self.task.cancel()
        self._client_gone(ABNORMAL_CLOSURE)

    def _maybe_done(self) -> None:
        if self.connection_over and self.app_returned and not self.ended.done():
            self.bridge.connections.discard(self)
            self.ended.set_result(None)

    # -- the application's side --------------------------------------------------------------

    async def _run(self, application: Any, scope: dict[str, Any]) -> None:
        error: BaseException | None = None
        try:
            await application(scope, self.receive, self.send)
        except asyncio.CancelledError:
            error = None
        except Exception as caught:
            error = caught
            if isinstance(caught, ClientDisconnected) or (
                self.disconnect is not None and self.accepted
            ):
                logger.info("WebSocket client went away while its application sent: %s", caught)
            else:
                logger.exception("Error running the ASGI application on a WebSocket")
        finally:
            self.task = None
            self._application_returned(error)

    def _application_returned(self, error: BaseException | None) -> None:
        self.app_returned = True
        self.app_error = error
        if not self.decided.done():
            if error is None and self.disconnect is None:
                logger.error(
                    "The ASGI application returned without accepting or closing the WebSocket"
                )
            self.decided.set_result(("failed",))
        elif self.ws_connection is not None and self.disconnect is None:
            self._close_for_application()
        self._maybe_done()

    def _close_for_application(self) -> None:
        """The application returned (or failed) with the connection open: close it
        for the client, as a normal closure or an internal error."""
        if self.app_error is None:
            self.close(1000)
        else:
            self.close(INTERNAL_ERROR, "internal error")

    def _wake_receiver(self) -> None:
        arrived = self.arrived
        if arrived is not None and not arrived.done():
            arrived.set_result(None)

    async def receive(self) -> dict[str, Any]:
        if not self.connect_given:
            self.connect_given = True
            return {"type": "websocket.connect"}
        while True:
            if self.inbox_at < len(self.inbox):
                event = self.inbox[self.inbox_at]
                self.inbox_at += 1
                if self.inbox_at == len(self.inbox):
                    self.inbox.clear()
                    self.inbox_at = 0
                space = self.space
                if space is not None and not space.done():
                    self.space = None
                    space.set_result(None)
                return event
            if self.disconnect is not None:
                return self.disconnect
            self.arrived = self.loop.create_future()
            await self.arrived

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "websocket.send":
            if not self.accepted:
                raise ASGIMessageError("websocket.send before websocket.accept")
            if not self.handshake_done.done():
                await self.handshake_done
            if self.disconnect is not None or self.app_closed:
                raise ClientDisconnected("the WebSocket is closed")
            text, data = message.get("text"), message.get("bytes")
            if text is not None:
                payload, binary = text.encode("utf-8"), False
            elif data is not None:
                payload, binary = bytes(data), True
            else:
                raise ASGIMessageError("websocket.send with neither text nor bytes")
            protocol = self.ws_connection
            if protocol is None or protocol.is_closing():
                raise ClientDisconnected("the WebSocket is closed")
            try:
                written = write_websocket_message(protocol, payload, binary)  # type: ignore[arg-type]
                if self.bridge.metrics is not None:
                    self.bridge.metrics.pending_out += 1
                # Returns once the stream took the frame: a client that does not read
                # holds its application here.
                if not written.done():
                    await written
            except StreamClosedError:
                raise ClientDisconnected("the WebSocket is closed") from None
            return
        if kind == "websocket.accept":
            if self.decided.done():
                self._already_decided(kind)
            headers = [
                (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            self.accepted = True
            self.decided.set_result(("accept", message.get("subprotocol"), headers))
            return
        if kind == "websocket.close":
            if not self.decided.done():
                self.decided.set_result(
                    ("close", message.get("code", 1000), message.get("reason") or "")
                )
                return
            if self.accepted and not self.app_closed:
                self.app_closed = True
                if self.ws_connection is not None:
                    reason = close_reason(message.get("reason"))
                    self.close(int(message.get("code", 1000)), reason)
            return
        if kind == "websocket.http.response.start":
            if self.decided.done() or self.response_start is not None:
                self._already_decided(kind)
            self.response_start = message
            return
        if kind == "websocket.http.response.body":
            start = self.response_start
            if start is None or self.decided.done():
                raise ASGIMessageError(f"{kind} without websocket.http.response.start")
            self.response_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                headers = [
                    (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                    for name, value in start.get("headers", ())
                ]
                self.decided.set_result(
                    ("response", int(start["status"]), headers, b"".join(self.response_body))
                )
            return
        raise ASGIMessageError(f"unexpected ASGI message {kind!r} on a WebSocket")

    def _already_decided(self, kind: str) -> None:
        if self.disconnect is not None:
            raise ClientDisconnected("the WebSocket is closed")
        raise ASGIMessageError(f"{kind} after the handshake was answered")
