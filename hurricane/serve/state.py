"""What a serving process knows while it serves, one concern an object:

- :class:`HttpLimits`: what a request may be, fixed at the start (frozen);
- :class:`RequestsInFlight`: the requests being answered, for the drain and the
  supervisor's probes;
- :class:`ServerState`: the probes' state (hurricane.platform.state.ProbeState), with
  the two above and the request metrics, as the HTTP layer reads it.

Which thread touches what: the app's event loop runs the request path, the drain and
the start-up, and is the only one to write any of it, except what ProbeState says of
its own fields. The probe server's thread (hurricane.platform.probes.ProbeServerThread)
reads ``backlog()``, ``requests_served`` (``--max-lifetime``) and the number of
requests in flight (the metrics), each a single read of one value, whole under the
GIL; nothing here is written from two threads, so nothing needs a lock.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hurricane.config.options import ServeOptions
from hurricane.http.server import log_access
from hurricane.platform.state import ProbeState


@dataclass(frozen=True)
class HttpLimits:
    """What one request may be; built once from the options and Django's settings."""

    max_body_size: int
    max_request_line: int
    max_headers: int
    # Larger bodies go to a temporary file (hurricane.http.body), in this folder (None:
    # the system's), as Django's uploads do above the same size.
    spool_above: int
    spool_directory: str | None

    @classmethod
    def from_options(cls, options: ServeOptions) -> HttpLimits:
        from django.conf import settings

        return cls(
            max_body_size=options.max_body_size,
            max_request_line=options.max_request_line,
            max_headers=options.max_headers,
            spool_above=settings.FILE_UPLOAD_MAX_MEMORY_SIZE,
            spool_directory=settings.FILE_UPLOAD_TEMP_DIR,
        )


class RequestsInFlight:
    """The requests being answered, and the connections they came on. Written on the
    app's loop only (the request path); ``requests_served`` and ``len(in_flight)`` are
    read from the probe server's thread too, one value at a time."""

    def __init__(self) -> None:
        self.in_flight: dict[Any, Any] = {}  # request connection -> server connection
        # Connections that sent at least one request: a drain closes these when idle
        # (keep-alive), but gives a just-accepted one the time to send its first.
        self.used_connections: weakref.WeakSet = weakref.WeakSet()
        # Set while no request is in flight: what a drain waits for.
        self.all_done = asyncio.Event()
        self.all_done.set()
        self.requests_served = 0

    def began(self, request_conn: Any, server_conn: Any) -> None:
        self.in_flight[request_conn] = server_conn
        self.used_connections.add(server_conn)
        self.all_done.clear()

    def ended(self, request_conn: Any) -> bool:
        """False when the request had already ended (it is counted once)."""
        if self.in_flight.pop(request_conn, None) is None:
            return False
        if not self.in_flight:
            self.all_done.set()
        return True

    def busy_connections(self) -> set:
        return set(self.in_flight.values())


class ServerState(ProbeState):
    """The probes' state of a serving process (or of the supervisor of ``--processes``)
    and what its request path uses: ``limits``, ``requests``, the request metrics.

    The names hurricane.http.exchange reads (``max_body_size``, ``max_request_line``,
    ``max_headers``, ``spool_above``, ``spool_directory``, ``port``, ``serving``,
    ``draining``, ``request_began()``, ``request_ended()``, ``app_request_done()``)
    stay here, handed on to the object of their concern."""

    lifetime_unit = "requests"

    def __init__(self, options: ServeOptions, port: int) -> None:
        super().__init__(options)
        self.port = port
        self.limits = HttpLimits.from_options(options)
        self.requests = RequestsInFlight()
        # App requests are answered: set on the loop once start-up is done.
        self.serving = False
        # Requests waiting for a worker: the pool's, once the app port opened (one
        # assignment, on the loop; read from the probe server's thread).
        self.backlog: Callable[[], int] = lambda: 0
        # The pool's threads, and those running a request (the same way).
        self.worker_threads: Callable[[], int] = lambda: 0
        self.workers_busy: Callable[[], int] = lambda: 0
        self.http_metrics = None
        if self.metrics_enabled:
            self.http_metrics = self.metrics = self.make_metrics()

    def make_metrics(self) -> Any:
        from hurricane.metrics.exposition import HttpMetrics

        return HttpMetrics(
            backlog=lambda: self.backlog(),
            in_flight=lambda: len(self.requests.in_flight),
            threads=lambda: self.worker_threads(),
            busy=lambda: self.workers_busy(),
        )

    def lifetime_used(self) -> int:
        return self.requests.requests_served

    def not_ready_reason(self) -> str | None:
        backlog = self.backlog()
        if backlog >= self.req_queue_len:
            return f"{backlog} requests wait for a worker (limit {self.req_queue_len})"
        return None

    def mark_started(self, seconds: float, **details: Any) -> None:
        """Start-up is done and the app port listens: the startup probe turns 200."""
        self.serving = True
        super().mark_started(seconds, **details)

    # -- the request path's (hurricane.http.exchange) --------------------------------------

    @property
    def max_body_size(self) -> int:
        return self.limits.max_body_size

    @property
    def max_request_line(self) -> int:
        return self.limits.max_request_line

    @property
    def max_headers(self) -> int:
        return self.limits.max_headers

    @property
    def spool_above(self) -> int:
        return self.limits.spool_above

    @property
    def spool_directory(self) -> str | None:
        return self.limits.spool_directory

    def request_began(self, request_conn: Any, server_conn: Any) -> None:
        self.requests.began(request_conn, server_conn)

    def request_ended(self, request_conn: Any) -> bool:
        return self.requests.ended(request_conn)

    def app_request_done(
        self,
        start_line: Any,
        status: int,
        remote_ip: str,
        duration: float,
        route: str,
        headers: Any = None,
        sent: int = 0,
    ) -> None:
        self.requests.requests_served += 1
        log_access(status, start_line.method, start_line.path, remote_ip, duration, headers)
        if self.http_metrics is not None:
            self.http_metrics.observe(start_line.method, status, route, duration, sent)
