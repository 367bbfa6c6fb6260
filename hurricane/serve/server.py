"""A process that answers the app's requests, a ``serve`` process of its own or one
of the serving processes of ``--processes``: the app port, the application behind it,
the drain of its connections, one core (``--cpu-affinity``) and the in-place restart
past ``--max-memory``. Its start-up, probes, signals and exit are its
:class:`~hurricane.serve.lifecycle.Lifecycle`'s."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from typing import Any, Protocol

from hurricane.config.options import ServeOptions
from hurricane.django.files import make_file_application, staticfiles_installed
from hurricane.django.pool import WorkerPool
from hurricane.django.wsgi import HurricaneWSGIContainer
from hurricane.http.eventloop import loop_factory
from hurricane.http.exchange import RequestRouter
from hurricane.http.forwarded import TrustedProxies
from hurricane.http.server import (
    ACCEPT_PER_WAKEUP,
    AppHTTPServer,
    ConnectionLimits,
    log_tornado_request,
)
from hurricane.http.tornado_compat import close_after_response
from hurricane.http.websocket import OpenWebSockets, WebSocketLimits
from hurricane.metrics.requests import RequestQueueLengthMetric
from hurricane.platform.listening import hand_on_sockets, inherited_sockets
from hurricane.platform.startup import StartupError
from hurricane.serve.affinity import CoreKeeper
from hurricane.serve.lifecycle import Lifecycle
from hurricane.serve.state import ServerState

__all__ = ["OwnProcess", "Server", "ServerState", "ServingRole", "StartupError"]

logger = logging.getLogger("hurricane.server.general")

MEMORY_CHECK_INTERVAL = 5.0
# On a drain, seconds a connection that has not sent its first request yet gets to send it.
FRESH_CONNECTION_GRACE = 1.0
# Threads kept for the sync parts of async requests (one per request in flight):
# enough for every connection of a busy pod, so none is started per request.
IDLE_ASYNC_THREADS = 256


def resident_memory_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024**2
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, in kB on Linux


class ServingRole(Protocol):
    """Where a serving process stands: a process of its own (:class:`OwnProcess`), or
    one of a supervisor's (hurricane.serve.supervisor.ChildRole)."""

    #: Connections accepted per wake-up of the loop (see ACCEPT_PER_WAKEUP).
    accept_per_wakeup: int

    def make_state(self, options: ServeOptions, port: int) -> ServerState:
        """The state its probes (or its supervisor's) and its request path use."""
        ...

    def core_keeper(self, mode: str) -> CoreKeeper | None:
        """Its keeper of one core for ``--cpu-affinity``, if it keeps to one."""
        ...

    def restarted(self, inherited: dict[int, list[socket.socket]]) -> bool:
        """Whether this start is an in-place restart (its start-up tasks already ran)."""
        ...

    def serving(self, server: Server, restarted: bool) -> None:
        """The process serves now: say so, and tell whoever needs to know."""


class OwnProcess:
    """A serving process of its own (no ``--processes``): Kubernetes sees it."""

    accept_per_wakeup = ACCEPT_PER_WAKEUP

    def make_state(self, options: ServeOptions, port: int) -> ServerState:
        return ServerState(options, port)

    def core_keeper(self, mode: str) -> CoreKeeper | None:
        return CoreKeeper.for_mode(mode)

    def restarted(self, inherited: dict[int, list[socket.socket]]) -> bool:
        # Only an in-place restart hands a process of its own its sockets.
        return bool(inherited)

    def serving(self, server: Server, restarted: bool) -> None:
        server.lifecycle.announce(server.mode, server.core_note(), server.app_urls, restarted)
        if not server.options.max_memory:
            logger.info("Starting without memory allocation check")


class Server:
    """A process that answers the app's requests: a ``serve`` process of its own, or
    one of a supervisor's serving processes (``role``). Its :class:`Lifecycle` runs
    it: this is its work (open the app port, attach the application, drain)."""

    def __init__(
        self, options: ServeOptions, handle_signals: bool = True, role: ServingRole | None = None
    ) -> None:
        self.options = options
        self.role: ServingRole = OwnProcess() if role is None else role
        self.port: int = options.port
        self.state = self.role.make_state(options, self.port)
        self.lifecycle = Lifecycle(options, self.state, self, handle_signals)
        # Made as start-up begins, so that the first core is chosen by how idle each
        # was meanwhile (CoreKeeper); kept as core_keeper once it pinned the process.
        self.core_choice = self.role.core_keeper(options.cpu_affinity)
        self.core_keeper: CoreKeeper | None = None
        self.listening = False
        self.mode = ""
        # Where the app port listens, for the start-up log: "http://0.0.0.0:8000, ...".
        self.app_urls = ""
        self.pool: WorkerPool | None = None
        self.router: RequestRouter | None = None
        self.app_server: AppHTTPServer | None = None
        # The open WebSockets (an ASGI application that takes them), for the drain.
        self.websockets: OpenWebSockets | None = None
        self.lifespan: Any = None  # hurricane.django.lifespan.Lifespan, when it runs

    def run(self) -> int:
        with asyncio.Runner(loop_factory=loop_factory(self.options.loop)) as runner:
            return runner.run(self.main())

    async def main(self) -> int:
        inherited = inherited_sockets()
        return await self.lifecycle.run(inherited, self.role.restarted(inherited))

    # -- the Work of a Lifecycle ----------------------------------------------------------

    def open_app_port(self, inherited: dict[int, list[socket.socket]]) -> None:
        """Listen on the app port; app requests get 503 until an application is attached."""
        options = self.options
        self.pool = pool = WorkerPool(options.workers, max_size=options.max_workers)
        self.state.backlog = lambda: pool.backlog
        self.state.worker_threads = lambda: pool.threads
        self.state.workers_busy = lambda: pool.busy
        RequestQueueLengthMetric.backlog_source = self.state.backlog
        file_app, prefixes = make_file_application(options, log_tornado_request)
        probes = self.lifecycle.probes
        self.router = RequestRouter(
            self.state,
            container=None,
            probe_app=probes.application if self.lifecycle.same_port else None,
            probe_paths=probes.paths,
            file_app=file_app,
            file_prefixes=prefixes,
        )
        # Tornado's own body limit sits above ours, so that ours answers 413 first.
        self.app_server = AppHTTPServer(
            self.router,
            limits=ConnectionLimits.from_options(options),
            # Processes sharing the socket take turns (see ACCEPT_PER_WAKEUP).
            accept_per_wakeup=self.role.accept_per_wakeup,
            max_body_size=options.max_body_size + 2 * 65536,
            max_buffer_size=options.max_buffer_size,
        )
        sockets, self.app_urls = self.lifecycle.bind_app_port(inherited)
        self.app_server.add_sockets(sockets)
        self.listening = True

    async def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Attach the application to the open app port; False when that failed."""
        try:
            self.attach_application(loop)
        except Exception as error:
            await self.lifecycle.fail_startup("Loading the application failed", error)
            return False
        if self.lifespan is not None:
            from hurricane.django.lifespan import LifespanFailed

            try:
                await self.lifespan.startup()
            except LifespanFailed as failure:
                await self.lifecycle.fail_startup(f"ASGI lifespan start-up failed: {failure}", None)
                return False
        if self.core_choice is not None:
            self.keep_to_one_core(loop, self.core_choice)
        return True

    def serving(self, restarted: bool) -> None:
        self.role.serving(self, restarted)
        if self.options.max_memory:
            self.watch_memory(asyncio.get_running_loop(), self.options.max_memory)

    async def stop(self, restart: bool) -> None:
        requests = self.state.requests
        app_server = self.app_server
        assert app_server is not None  # a drain begins once the app port is open
        sockets = app_server.stop_accepting()
        if not restart:
            for sock in sockets:
                sock.close()
        # In-flight requests close their connection after the response; idle
        # keep-alive connections close now.
        for request_conn in list(requests.in_flight):
            close_after_response(request_conn)
        app_server.close_idle_connections(requests.busy_connections(), requests.used_connections)
        deadline = time.monotonic() + self.options.graceful_timeout
        # Open WebSockets get 1001 ("going away") now, after --shutdown-delay, so that
        # their clients reconnect to another pod; they close alongside the requests.
        closing_websockets = (
            asyncio.ensure_future(
                self.websockets.close_all(self.options.graceful_timeout, logger.info)
            )
            if self.websockets is not None
            else None
        )
        try:
            await asyncio.wait_for(requests.all_done.wait(), self.options.graceful_timeout)
            # A connection accepted just before the listener stopped may not have sent
            # its request yet: closing it now would lose that request.
            fresh_until = min(deadline, time.monotonic() + FRESH_CONNECTION_GRACE)
            while app_server.fresh_connections(requests.used_connections) and (
                time.monotonic() < fresh_until
            ):
                await asyncio.sleep(0.02)
            await asyncio.wait_for(requests.all_done.wait(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            logger.warning(
                "%d requests still running after %.1f s (--graceful-timeout)",
                len(requests.in_flight),
                self.options.graceful_timeout,
            )
        if closing_websockets is not None:
            dropped = await closing_websockets
            if dropped:
                logger.warning(
                    "%d WebSocket(s) still open after %.1f s (--graceful-timeout): dropped",
                    dropped,
                    self.options.graceful_timeout,
                )
        app_server.close_idle_connections(set())
        if self.lifespan is not None:
            await self.lifespan.shutdown(max(1.0, deadline - time.monotonic()))
        if restart:
            self.exec_restart(sockets)

    # -- one core ---------------------------------------------------------------------------

    def keep_to_one_core(self, loop: asyncio.AbstractEventLoop, keeper: CoreKeeper) -> None:
        """--cpu-affinity auto: every thread of this process on one core, once the
        pool and the probe server run (threads started later inherit it), and a look
        every few seconds at whether other processes crowd that core."""
        if not keeper.pin_first():
            return
        self.core_keeper = keeper

        def check() -> None:
            keeper.check()
            loop.call_later(keeper.next_check_in(), check)

        loop.call_later(keeper.next_check_in(), check)

    def core_note(self) -> str:
        keeper = self.core_keeper
        return "" if keeper is None else f"; CPU {keeper.core}"

    def build_wsgi_application(self, asgi: bool = False) -> Any:
        if asgi:
            # The counterpart of Django's ASGI handler for sync views: the same
            # middleware, whatever WSGI_APPLICATION wraps around it.
            from django.core.handlers.wsgi import WSGIHandler

            application = WSGIHandler()
        else:
            from django.core.servers.basehttp import get_internal_wsgi_application

            application = get_internal_wsgi_application()
        if self.serves_static_through_finders():
            # As runserver does: serve app static files through the finders.
            from django.contrib.staticfiles.handlers import StaticFilesHandler

            application = StaticFilesHandler(application)
        return application

    def serves_static_through_finders(self) -> bool:
        from django.conf import settings

        return bool(self.options.static and settings.DEBUG and staticfiles_installed())

    def uses_asgi(self) -> bool:
        """``--asgi``, else whether the project names an ASGI_APPLICATION."""
        if self.options.asgi is not None:
            return self.options.asgi
        from django.conf import settings

        return bool(getattr(settings, "ASGI_APPLICATION", None))

    def attach_application(self, loop: asyncio.AbstractEventLoop) -> None:
        from hurricane.metrics.exposition import route_of as metrics_route_of

        route_of = metrics_route_of if self.state.http_metrics is not None else None
        pool, router = self.pool, self.router
        assert pool is not None and router is not None  # open_app_port made them
        # None: no one's X-Forwarded-* believed.
        router.trusted_proxies = TrustedProxies.of(self.options.forwarded_allow_ips)
        if not self.uses_asgi():
            self.mode = "WSGI"
            router.container = HurricaneWSGIContainer(
                self.build_wsgi_application(), pool, loop, route_of
            )
            return
        from hurricane.django.asgi import (
            AsyncViewsInPool,
            DjangoDispatcher,
            HurricaneASGIContainer,
            LentThreadsDjangoApplication,
            django_http_handler_of,
            is_django_handler,
            load_asgi_application,
        )

        application = load_asgi_application()
        if self.options.lifespan != "off":
            if is_django_handler(application):
                if self.options.lifespan == "on":
                    raise StartupError(
                        "--lifespan on: Django's own ASGI handler does not take the ASGI "
                        "lifespan protocol; name an application that does in ASGI_APPLICATION"
                    )
            else:
                from hurricane.django.lifespan import Lifespan

                self.lifespan = Lifespan(application, self.options.lifespan)
        django_http = django_http_handler_of(application)
        if django_http is None:
            self.mode = "ASGI"
            if self.serves_static_through_finders():
                from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

                application = ASGIStaticFilesHandler(application)
            router.container = container = HurricaneASGIContainer(application, route_of)
            if self.lifespan is not None:
                container.lifespan_state = self.lifespan.state
            self.attach_websockets(application)
            return
        self.mode = "ASGI: async views on the loop, sync views in the pool"
        if django_http is not application:
            # A Channels router around Django's handler: its WebSockets (and whatever
            # else it routes) go to it, its HTTP to the same two paths as Django's own.
            self.mode = (
                "ASGI: WebSockets to the router, async views on the loop, sync views in the pool"
            )
            self.attach_websockets(application)
        async_views = HurricaneASGIContainer(
            LentThreadsDjangoApplication(django_http, keep_idle=IDLE_ASYNC_THREADS),
            route_of,
        )
        if self.lifespan is not None:
            async_views.lifespan_state = self.lifespan.state
        async_in_pool = None
        if self.options.async_views == "pool":
            async_in_pool = AsyncViewsInPool(budget=max(1, pool.max_size - pool.size))
        router.container = DjangoDispatcher(
            async_views,
            HurricaneWSGIContainer(
                self.build_wsgi_application(asgi=True),
                pool,
                loop,
                route_of,
                async_to_sync_on_loop=True,
            ),
            async_in_pool,
        )

    def attach_websockets(self, application: Any) -> None:
        """WebSocket handshakes go to ``application`` (an ASGI application other than
        Django's own handler, which takes HTTP only)."""
        from hurricane.django.websocket import WebSocketBridge

        router = self.router
        assert router is not None
        self.websockets = OpenWebSockets()
        metrics = self.state.http_metrics
        bridge = WebSocketBridge(
            application,
            WebSocketLimits.from_options(self.options),
            self.websockets,
            self.port,
            trusted_proxies=router.trusted_proxies,
            metrics=getattr(metrics, "websockets", None),
            lifespan_state=self.lifespan.state if self.lifespan is not None else None,
        )
        router.websocket_app = bridge.application_for_tornado()
        websocket_metrics = bridge.metrics
        if websocket_metrics is not None:
            loop = asyncio.get_running_loop()
            interval = websocket_metrics.FLUSH_INTERVAL

            def flush() -> None:
                websocket_metrics.flush()
                loop.call_later(interval, flush)

            loop.call_later(interval, flush)

    # -- in-place restart past --max-memory --------------------------------------------------

    def watch_memory(self, loop: asyncio.AbstractEventLoop, max_memory: int) -> None:
        """Check the memory every MEMORY_CHECK_INTERVAL, unless a fresh process already
        takes more than ``max_memory`` (--max-memory): it would restart in place for
        ever, so say so once and leave it."""
        used = resident_memory_mb()
        if used <= max_memory:
            logger.info(
                "Starting memory allocation check with maximum memory set to %d Mb", max_memory
            )
            loop.call_later(MEMORY_CHECK_INTERVAL, self.check_memory, max_memory)
            return
        logger.error(
            "--max-memory %d MB is below the %.0f MB this process takes as soon as it "
            "serves: a restart could not bring it under, so it does not restart for "
            "memory; set --max-memory well above %.0f MB",
            max_memory,
            used,
            used,
        )

    def check_memory(self, max_memory: int) -> None:
        if self.state.draining:
            return
        used = resident_memory_mb()
        if used > max_memory:
            logger.warning(
                "Memory (rss) usage is too high. Restarting. Current memory usage is %.0f Mb, "
                "over --max-memory %d MB: restarting in place",
                used,
                max_memory,
            )
            asyncio.ensure_future(self.lifecycle.drain(0.0, restart=True))
            return
        asyncio.get_running_loop().call_later(MEMORY_CHECK_INTERVAL, self.check_memory, max_memory)

    def exec_restart(self, app_sockets: list[socket.socket]) -> None:
        """Replace this process by a fresh one that keeps the listening sockets: new
        connections wait in the kernel's backlog meanwhile, so none is refused."""
        handed = [(self.port, sock) for sock in app_sockets]
        handed += [(self.lifecycle.probe_port, sock) for sock in self.lifecycle.probes.sockets]
        os.environ.update(hand_on_sockets(handed))
        if self.core_keeper is not None:
            self.core_keeper.release()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)
