"""WebSockets on the app port, apart from what answers them: which requests ask for
one, whether their handshake can be served, the limits of a connection, and the
open connections of the process (for the drain and the metrics).

Tornado's own protocol (:class:`tornado.websocket.WebSocketProtocol13`, held to the
close codes RFC 6455 asks for by
:class:`~hurricane.http.tornado_compat.StrictWebSocketProtocol`) reads and writes the
frames; the ASGI application behind them is bridged in :mod:`hurricane.django.websocket`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tornado import httputil

#: Close code of a server going away (RFC 6455, 7.4.1): the client reconnects elsewhere.
GOING_AWAY = 1001


def asks_for_websocket(headers: httputil.HTTPHeaders) -> bool:
    """Whether a GET request asks to upgrade to a WebSocket. ``get_list`` costs no
    exception when the header is absent, as on nearly every request."""
    upgrade = headers.get_list("Upgrade")
    return bool(upgrade) and any("websocket" in value.lower() for value in upgrade)


def handshake_problem(
    start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
    """Why a WebSocket handshake cannot be served (status, one line, extra headers),
    or None. Checked before the application hears of the connection, so that it
    never sees a ``websocket.connect`` that could not be accepted anyway."""
    if start_line.version != "HTTP/1.1":
        return 400, "A WebSocket handshake needs HTTP/1.1", ()
    connection = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
    if "upgrade" not in connection:
        return 400, 'A WebSocket handshake needs "Connection: Upgrade"', ()
    version = headers.get("Sec-WebSocket-Version")
    if version != "13":
        return 426, "Unsupported WebSocket version (13 only)", (("Sec-WebSocket-Version", "13"),)
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        valid_key = len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return 400, "Missing or invalid Sec-WebSocket-Key", ()
    if headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers:
        return 400, "A WebSocket handshake takes no body", ()
    return None


@dataclass(frozen=True)
class WebSocketLimits:
    """``--ws-max-message-size``, ``--ws-ping-interval``, ``--ws-ping-timeout``,
    ``--ws-per-message-deflate``."""

    max_message_size: int
    ping_interval: float
    ping_timeout: float
    compression: bool

    @classmethod
    def from_options(cls, options: Any) -> WebSocketLimits:
        return cls(
            max_message_size=options.ws_max_message_size,
            ping_interval=options.ws_ping_interval,
            ping_timeout=min(options.ws_ping_timeout, options.ws_ping_interval or float("inf")),
            compression=options.ws_per_message_deflate,
        )


class OpenWebSocket(Protocol):
    """What the registry needs of one connection (the bridge's handler)."""

    def go_away(self) -> None:
        """Close with 1001, or refuse a handshake still waiting for the app."""

    def abort(self) -> None:
        """Drop the connection and stop its application now."""

    @property
    def finished(self) -> asyncio.Future:
        """Done when the connection closed and its application returned."""
        ...


class OpenWebSockets:
    """The process's WebSocket connections, from the handshake on until their
    application returned; touched on the loop only. Idle ones cost the readiness
    probe nothing: only the worker pool's backlog counts there."""

    def __init__(self) -> None:
        self.open: set[OpenWebSocket] = set()
        self.refusing = False  # set when the drain begins: new handshakes get 503

    def add(self, connection: OpenWebSocket) -> None:
        self.open.add(connection)

    def discard(self, connection: OpenWebSocket) -> None:
        self.open.discard(connection)

    def __len__(self) -> int:
        return len(self.open)

    async def close_all(self, timeout: float, log: Callable[[str], None] | None = None) -> int:
        """The drain: close every connection with 1001 ("going away"), wait up to
        ``timeout`` for the clients' answers and the applications' return, then drop
        what is left; returns how many had to be dropped."""
        self.refusing = True
        if not self.open:
            return 0
        connections = list(self.open)
        if log is not None:
            log(f"Closing {len(connections)} WebSocket(s) with 1001 (going away)")
        for connection in connections:
            connection.go_away()
        deadline = time.monotonic() + timeout
        pending = [c.finished for c in connections if not c.finished.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        left = [c for c in connections if not c.finished.done()]
        for connection in left:
            connection.abort()
        return len(left)
