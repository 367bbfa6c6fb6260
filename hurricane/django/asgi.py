"""The ASGI bridge: an ASGI application's HTTP requests run as tasks on the event loop.

With Django's own ASGI handler, each request goes where its view can run best
(:class:`DjangoDispatcher`): an ``async def`` view runs on the loop and never hops
to a thread for the view itself; a plain ``def`` view runs in the worker pool
through Django's WSGI handler, exactly as without ``--asgi``. Both handlers load
the same settings, URLconf and middleware, so a request is answered the same way
whichever path it takes, and the pool keeps bounding the blocking work (and the
backlog that readiness reports). Any other ASGI application (a Channels router,
an ASGI middleware around Django) gets every HTTP request through ASGI.

The request body is read whole before the application starts (the app server's
body limit applies first; a large one waits in a temporary file, see
hurricane.http.body, and comes in messages of ASGI_MESSAGE_SIZE); the response
may stream: each ``more_body`` chunk is awaited until the socket takes it, so a
slow client slows the application down instead of filling memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from asgiref.sync import ThreadSensitiveContext
from tornado.iostream import StreamClosedError

from hurricane.django.wsgi import HurricaneWSGIContainer, server_name_of, split_target
from hurricane.http.body import ASGI_MESSAGE_SIZE, Body, close_body
from hurricane.http.exchange import ResponseSink
from hurricane.http.response import status_line

logger = logging.getLogger("hurricane.server.general")

ASGI_VERSIONS = {"version": "3.0", "spec_version": "2.3"}


def build_scope(request: ResponseSink) -> dict[str, Any]:
    """The ASGI HTTP connection scope of one request."""
    start_line, headers, context = request.start_line, request.headers, request.context
    raw_path, query = split_target(start_line.path)
    remote_ip = request.remote_ip
    if remote_ip == context.remote_ip:
        address = getattr(context, "address", None)
        client_port = address[1] if isinstance(address, tuple) and len(address) > 1 else 0
    else:  # X-Forwarded-For carries no port
        client_port = 0
    return {
        "type": "http",
        "asgi": ASGI_VERSIONS,
        "http_version": start_line.version.partition("/")[2] or "1.1",
        "method": start_line.method,
        "scheme": request.scheme,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        # As on the WSGI path: names with underscores are dropped, since Django would
        # not tell "X_Forwarded_For" from "X-Forwarded-For".
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.get_all()
            if "_" not in name
        ],
        "client": (remote_ip, client_port),
        "server": (server_name_of(headers), request.server_port),
    }


class ASGIResponseError(RuntimeError):
    """The application sent ASGI messages out of order."""


class ASGIExchange:
    """``receive`` and ``send`` of one request, mapped onto the app server's sink."""

    __slots__ = ("body", "sink", "body_given", "gone", "status", "headers", "state")

    def __init__(self, body: Body, sink: ResponseSink, gone: asyncio.Future) -> None:
        self.body = body
        self.sink = sink
        self.body_given = False
        self.gone = gone  # resolved when the client goes away or the response is complete
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.state = "new"  # -> started -> streaming -> complete

    async def receive(self) -> dict[str, Any]:
        if not self.body_given:
            body = self.body
            if isinstance(body, bytes):
                self.body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            # A spooled body, a message per ASGI_MESSAGE_SIZE; the last one is short.
            chunk = body.read(ASGI_MESSAGE_SIZE)
            self.body_given = len(chunk) < ASGI_MESSAGE_SIZE
            return {"type": "http.request", "body": chunk, "more_body": not self.body_given}
        if not self.gone.done():
            await asyncio.shield(self.gone)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if self.sink.client_gone:
            raise StreamClosedError()  # an OSError, as the ASGI spec asks for
        if kind == "http.response.start":
            if self.state != "new":
                raise ASGIResponseError("http.response.start sent twice")
            self.status = status_line(int(message["status"]))
            self.headers = [
                (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            self.state = "started"
            return
        if kind != "http.response.body":
            raise ASGIResponseError(f"unexpected ASGI message {kind!r}")
        if self.state in ("new", "complete"):
            raise ASGIResponseError(f"http.response.body sent when the response is {self.state}")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if self.state == "started":
            if not more:  # the whole response in one message: one write, one syscall
                self._complete()
                self.sink.send_whole(self.status, self.headers, body)
                return
            self.state = "streaming"
            self.sink.start_stream(self.status, self.headers)
        if body:
            await self.sink.write_chunk(body)
        if not more:
            self._complete()
            self.sink.finish_stream()

    def _complete(self) -> None:
        self.state = "complete"
        if not self.gone.done():
            self.gone.set_result(None)

    def application_returned(self, error: BaseException | None) -> None:
        """Close what the application left open."""
        if self.state == "complete":
            return
        if self.state == "streaming":
            self._complete()
            if error is None:
                self.sink.finish_stream()
            else:  # a cut-off body must not look complete to the client
                self.sink.fail()
            return
        # Returning without a response is an application error only while the client
        # waits for one: when it went away, Django's handler cancels the view and
        # returns quietly, as the ASGI spec allows.
        if error is None and not self.sink.client_gone:
            logger.error("The ASGI application returned without sending a response")
        self._complete()
        self.sink.fail()


class HurricaneASGIContainer:
    """Runs every request through an ASGI application, on the loop."""

    def __init__(
        self,
        application: Any,
        route_of: Any = None,
    ) -> None:
        self.application = application
        self.route_of = route_of
        self.tasks: set[asyncio.Task] = set()
        # The application's lifespan state (hurricane.django.lifespan), copied into
        # every request's scope as the ASGI spec asks; None without a lifespan.
        self.lifespan_state: dict[str, Any] | None = None

    def serve(self, body: Body, sink: ResponseSink) -> None:
        scope = build_scope(sink)
        if self.lifespan_state is not None:
            scope["state"] = dict(self.lifespan_state)
        if self.route_of is not None:
            sink.route = self.route_of(scope["path"])
        self.run(scope, body, sink)

    def run(self, scope: dict[str, Any], body: Body, sink: ResponseSink) -> None:
        task = asyncio.ensure_future(self._run(scope, body, sink))
        # The loop keeps only weak references to tasks.
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, scope: dict[str, Any], body: Body, sink: ResponseSink) -> None:
        gone = asyncio.get_running_loop().create_future()

        def on_gone() -> None:
            if not gone.done():
                gone.set_result(None)

        sink.on_gone = on_gone
        exchange = ASGIExchange(body, sink, gone)
        error: BaseException | None = None
        try:
            await self.application(scope, exchange.receive, exchange.send)
        except Exception as caught:
            error = caught
            if sink.client_gone:
                logger.info("Client went away during a response")
            else:
                logger.exception("Error running the ASGI application")
        finally:
            close_body(body)
        exchange.application_returned(error)


class LentThreadsDjangoApplication:
    """Django's ASGI handler, with each request's thread-sensitive sync code (signal
    receivers, sync middleware, ``sync_to_async`` calls) on a thread lent to it.

    Django gives each request a ``ThreadSensitiveContext`` of its own, whose executor
    starts a new thread and joins it when the request ends. py-spy showed those two
    steps, done on the event loop, as a quarter of the loop's time on /asleep. Here
    the request's context gets a single-thread executor kept from earlier requests:
    still one thread per request at a time, as Django wants (one database
    connection per request), but no thread started or joined per request.
    """

    def __init__(self, handler: Any, keep_idle: int) -> None:
        self.handler = handler
        self.keep_idle = keep_idle
        self.idle: list[ThreadPoolExecutor] = []  # touched on the loop only

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        executor = self.idle.pop() if self.idle else self._new_executor()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handler.handle(scope, receive, send)
        finally:
            if len(self.idle) < self.keep_idle:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="hurricane-async-sync")


class AsyncViewsInPool:
    """Which requests for async views run in the worker pool (``--async-views pool``).

    There, Django's WSGI handler runs the request's sync middleware and signal
    receivers in the worker thread, and the view's coroutine on the event loop
    (hurricane.django.wsgi.lend_loop_to_async_to_sync): one round trip to the loop,
    where Django's ASGI handler makes four to a thread lent to the request, each
    waiting for the interpreter lock to change hands. On a 50 ms async view that is
    1.6x the requests per second for a third less CPU
    (bench/results/profile-asleep.md). The cost: the thread waits while the view
    awaits, and a client that goes away does not cancel the view (it runs to its
    end, as under a WSGI server). So a request goes there only while fewer than
    ``budget`` such requests hold threads (the base threads of --workers stay for
    sync views), and a view that held a thread for more than HOLD_LIMIT seconds, or
    streamed its response, runs on the loop from then on (a long poll, server-sent
    events).

    ``admit`` runs on the event loop; ``streaming`` and ``finished`` in the worker
    threads.
    """

    HOLD_LIMIT = 1.0

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.in_pool = 0
        self.lock = threading.Lock()
        self.on_loop: set[Any] = set()  # views that showed they hold threads long

    def admit(self, view: Any) -> bool:
        if view in self.on_loop or self.in_pool >= self.budget:
            return False
        with self.lock:
            self.in_pool += 1
        return True

    def streaming(self, view: Any) -> None:
        self._to_loop(view, "streams its response")

    def finished(self, view: Any, seconds: float) -> None:
        with self.lock:
            self.in_pool -= 1
        if seconds > self.HOLD_LIMIT:
            self._to_loop(view, f"held a worker thread for {seconds:.1f} s")

    def _to_loop(self, view: Any, why: str) -> None:
        if view not in self.on_loop:
            self.on_loop.add(view)
            name = getattr(view, "__qualname__", None) or repr(view)
            logger.info(
                "The async view %s.%s %s: its requests run on the event loop from now on",
                getattr(view, "__module__", "?"),
                name,
                why,
            )


class DjangoDispatcher:
    """Django's ASGI handler for ``async def`` views (or the worker pool, see
    :class:`AsyncViewsInPool`), the worker pool for the rest."""

    def __init__(
        self,
        asgi: HurricaneASGIContainer,
        wsgi: HurricaneWSGIContainer,
        async_in_pool: AsyncViewsInPool | None = None,
    ) -> None:
        self.asgi = asgi
        self.wsgi = wsgi
        self.async_in_pool = async_in_pool

    def serve(self, body: Body, sink: ResponseSink) -> None:
        path = unquote(split_target(sink.start_line.path)[0])
        view = async_view_of(path)
        if view is None:
            self.wsgi.serve(body, sink)
        elif self.async_in_pool is not None and self.async_in_pool.admit(view):
            self.wsgi.serve(body, sink, PooledAsyncRequest(self.async_in_pool, view))
        else:
            self.asgi.serve(body, sink)


class PooledAsyncRequest:
    """What the worker thread tells :class:`AsyncViewsInPool` of one request."""

    __slots__ = ("views", "view", "began")

    def __init__(self, views: AsyncViewsInPool, view: Any) -> None:
        self.views = views
        self.view = view
        self.began = time.monotonic()

    def streaming(self) -> None:
        self.views.streaming(self.view)

    def finished(self) -> None:
        self.views.finished(self.view, time.monotonic() - self.began)


@functools.lru_cache(maxsize=4096)
def async_view_of(path: str) -> Any:
    """The ``async def`` view Django's URLconf sends ``path`` to, else None. Cached per
    path; a path that matches nothing (404) or breaks the URLconf is not async:
    the worker pool answers it, through the same middleware."""
    from asgiref.sync import iscoroutinefunction
    from django.conf import settings
    from django.urls import get_resolver

    prefix = (getattr(settings, "FORCE_SCRIPT_NAME", None) or "").rstrip("/")
    if prefix and path.startswith(prefix + "/"):
        path = path[len(prefix) :]
    try:
        match = get_resolver().resolve(path)
    except Exception:
        return None
    return match.func if iscoroutinefunction(match.func) else None


def load_asgi_application() -> Any:
    """The project's ASGI application: ``settings.ASGI_APPLICATION`` when set, else
    Django's handler."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.utils.module_loading import import_string

    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted:
        from django.core.handlers.asgi import ASGIHandler

        return ASGIHandler()
    try:
        return import_string(dotted)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION {dotted!r} could not be imported: {error}"
        ) from error


def is_django_handler(application: Any) -> bool:
    from django.core.handlers.asgi import ASGIHandler

    return isinstance(application, ASGIHandler)


def django_http_handler_of(application: Any) -> Any | None:
    """The Django ASGI handler that answers ``application``'s HTTP requests, where
    Hurricane can see it, else None.

    That is the application itself, or the ``"http"`` entry of a Channels
    ``ProtocolTypeRouter`` when it is Django's handler as ``get_asgi_application()``
    returns it: the router only passes an HTTP scope on, so Hurricane may pass it on
    in its place and send sync views to the worker pool (DjangoDispatcher) instead of
    through Django's thread hops. A wrapped entry (ASGI middleware, the static files
    handler) or a router class of the project's own keeps getting every request.
    """
    if is_django_handler(application):
        return application
    try:
        from channels.routing import ProtocolTypeRouter  # type: ignore[import-untyped]
    except ImportError:
        return None
    if not isinstance(application, ProtocolTypeRouter):
        return None
    if type(application).__call__ is not ProtocolTypeRouter.__call__:
        return None
    mapping = getattr(application, "application_mapping", None)
    http = mapping.get("http") if isinstance(mapping, dict) else None
    from django.core.handlers.asgi import ASGIHandler

    return http if type(http) is ASGIHandler else None
