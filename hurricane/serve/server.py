"""The server's lifecycle, in one place: start-up tasks, listening, the probes'
state, signals, drain and exit, and the in-place restart past ``--max-memory``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import weakref
from typing import Any

from hurricane.config.options import ServeOptions, described_option, probe_port_of
from hurricane.django.files import make_file_application, staticfiles_installed
from hurricane.django.pool import WorkerPool
from hurricane.django.wsgi import HurricaneWSGIContainer
from hurricane.http.eventloop import install_tornado_ioloop, loop_factory, loop_kind
from hurricane.http.exchange import RequestRouter
from hurricane.http.forwarded import TrustedProxies
from hurricane.http.server import (
    ACCEPT_PER_WAKEUP,
    AppHTTPServer,
    ConnectionLimits,
    log_access,
    log_tornado_request,
)
from hurricane.http.tornado_compat import close_after_response
from hurricane.metrics.requests import RequestQueueLengthMetric
from hurricane.platform.listening import (
    ListenError,
    bind_port,
    check_port_free,
    hand_on_sockets,
    inherited_sockets,
    urls_of,
)
from hurricane.platform.probes import ProbeServer, start_probe_server
from hurricane.platform.process import (
    DRAIN_WEBHOOK_WAIT,
    handle_stop_signals,
    wait_for_delivery,
)
from hurricane.platform.startup import StartupError, StartupFailed, run_startup_tasks
from hurricane.platform.state import ProbeState
from hurricane.serve.affinity import CoreKeeper

logger = logging.getLogger("hurricane.server.general")

MEMORY_CHECK_INTERVAL = 5.0
# On a drain, seconds a connection that has not sent its first request yet gets to send it.
FRESH_CONNECTION_GRACE = 1.0
# Threads kept for the sync parts of async requests (one per request in flight):
# enough for every connection of a busy pod, so none is started per request.
IDLE_ASYNC_THREADS = 256


class ServerState(ProbeState):
    """The probes' state for ``serve``, and what the request path updates; touched on
    the loop only, except ``backlog`` which reads the worker queue."""

    lifetime_unit = "requests"

    def __init__(self, options: ServeOptions, port: int) -> None:
        super().__init__(options)
        self.port = port
        self.max_body_size: int = options.max_body_size
        # Larger bodies go to a temporary file (hurricane.http.body), as Django's
        # uploads do above the same size.
        from django.conf import settings

        self.spool_above: int = settings.FILE_UPLOAD_MAX_MEMORY_SIZE
        self.spool_directory: str | None = settings.FILE_UPLOAD_TEMP_DIR
        self.max_request_line: int = options.max_request_line
        self.max_headers: int = options.max_headers
        self.serving = False  # app requests are answered
        self.requests_served = 0
        self.in_flight: dict[Any, Any] = {}  # request connection -> server connection
        # Connections that sent at least one request: a drain closes these when idle
        # (keep-alive), but gives a just-accepted one the time to send its first.
        self.used_connections: weakref.WeakSet = weakref.WeakSet()
        self.all_done = asyncio.Event()
        self.all_done.set()
        self.backlog = lambda: 0
        self.http_metrics = None
        if self.metrics_enabled:
            self.http_metrics = self.metrics = self.make_metrics()

    def make_metrics(self) -> Any:
        from hurricane.metrics.exposition import HttpMetrics

        return HttpMetrics(backlog=lambda: self.backlog(), in_flight=lambda: len(self.in_flight))

    def lifetime_used(self) -> int:
        return self.requests_served

    def not_ready_reason(self) -> str | None:
        backlog = self.backlog()
        if backlog >= self.req_queue_len:
            return f"{backlog} requests wait for a worker (limit {self.req_queue_len})"
        return None

    def request_began(self, request_conn: Any, server_conn: Any) -> None:
        self.in_flight[request_conn] = server_conn
        self.used_connections.add(server_conn)
        self.all_done.clear()

    def request_ended(self, request_conn: Any) -> bool:
        if self.in_flight.pop(request_conn, None) is None:
            return False
        if not self.in_flight:
            self.all_done.set()
        return True

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
        self.requests_served += 1
        log_access(status, start_line.method, start_line.path, remote_ip, duration, headers)
        if self.http_metrics is not None:
            self.http_metrics.observe(start_line.method, status, route, duration, sent)

    def mark_started(self, seconds: float, **details: Any) -> None:
        """Start-up is done and the app port listens: the startup probe turns 200."""
        self.serving = True
        super().mark_started(seconds, **details)

    def busy_connections(self) -> set:
        return set(self.in_flight.values())


def resident_memory_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024**2
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, in kB on Linux


class Server:
    """One ``serve`` process: ``main()`` starts the probes, runs the start-up tasks,
    opens the app port and waits; ``on_signal()`` and ``drain()`` end it."""

    def __init__(
        self, options: ServeOptions, handle_signals: bool = True, child: Any = None
    ) -> None:
        self.options = options
        self.handle_signals = handle_signals
        # A ChildRole when a supervisor (``--processes``) started this process.
        self.child = child
        self.app_listening = False
        self.mode = ""
        self.port: int = options.port
        self.probe_port: int = probe_port_of(options)
        self.same_port = self.probe_port == self.port
        # Where each server listens, for the start-up log: "http://0.0.0.0:8000, ...".
        self.app_urls = ""
        self.began = time.monotonic()
        self.exit_code = 0
        self.stop_startup = threading.Event()
        self.app_server: AppHTTPServer | None = None
        self.probes = ProbeServer()
        self.pool: WorkerPool | None = None
        self.stopping: asyncio.Future | None = None
        self.core_keeper: CoreKeeper | None = None

    def run(self) -> int:
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(self.main())

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return loop_factory(self.options.loop)()

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        install_tornado_ioloop()
        core_keeper = self.new_core_keeper()
        self.stopping = loop.create_future()
        self.state = self.make_state()
        inherited = inherited_sockets()
        # A serving process of a supervisor inherits the socket too, but is not a restart.
        restarted = bool(inherited) and self.child is None
        if self.handle_signals:
            handle_stop_signals(loop, self.on_signal)
        try:
            if self.port not in inherited:
                # The app port opens after the start-up tasks: a taken port or a bad
                # --app-interface is reported now, before they run in vain.
                self.check_app_port()
            self.start_probe_server(inherited)
        except StartupError:
            for sockets in inherited.values():
                for sock in sockets:
                    sock.close()
            raise
        if not restarted and not await self.run_startup_tasks():
            return self.exit_code
        if self.stop_startup.is_set():  # a signal arrived as the last task ended
            return self.exit_code
        if not self.app_listening:
            self.open_app_port(inherited)
        if not await self.start_serving(loop):
            return self.exit_code
        if core_keeper is not None:
            self.keep_to_one_core(loop, core_keeper)
        self.state.mark_started(time.monotonic() - self.began)
        if self.child is not None:
            self.report_to_supervisor()
            logger.info(
                "Serving process %d: serving on port %d (%s, %d workers, %s%s): %s%s",
                self.child.index,
                self.port,
                self.mode,
                self.options.workers,
                loop_kind(self.options.loop),
                self.core_note(),
                self.app_urls,
                " after an in-place restart" if restarted else "",
            )
        else:
            logger.info("Starting HTTP Server on port %d", self.port)
            if self.options.no_probe:
                probes = "off"
            elif self.same_port:
                probes = "on the app port"
            else:
                probes = self.probes.urls
            logger.info(
                "Serving on port %d (%s; %d workers; %s%s): %s; probes: %s%s",
                self.port,
                self.mode,
                self.options.workers,
                loop_kind(self.options.loop),
                self.core_note(),
                self.app_urls,
                probes,
                " (after an in-place restart)" if restarted else "",
            )
        if self.options.max_memory:
            self.watch_memory(loop, self.options.max_memory)
        elif self.child is None:
            logger.info("Starting without memory allocation check")
        await self.stopping
        return self.exit_code

    def new_core_keeper(self) -> CoreKeeper | None:
        mode = self.options.cpu_affinity
        if self.child is not None:
            return CoreKeeper.for_mode(mode, self.child.index, self.child.core_seed)
        return CoreKeeper.for_mode(mode)

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

    def make_state(self) -> ServerState:
        if self.child is not None:
            return self.child.make_state(self.options, self.port)
        return ServerState(self.options, self.port)

    def report_to_supervisor(self) -> None:
        """Write this process's row for the supervisor's probes, every heartbeat; a
        process whose supervisor is gone drains and exits."""
        self.child.report(self.state)
        if self.child.orphaned() and not self.state.draining:
            logger.warning("The supervisor is gone: draining")
            asyncio.ensure_future(self.drain(0.0))
        asyncio.get_running_loop().call_later(
            self.child.heartbeat_interval, self.report_to_supervisor
        )

    # -- start-up ------------------------------------------------------------------------

    def start_probe_server(self, inherited: dict[int, list[socket.socket]]) -> None:
        options = self.options
        self.probes = start_probe_server(
            self.state,
            options,
            self.probe_port,
            ConnectionLimits.from_options(options),
            inherited,
            on_app_port=self.same_port,
        )
        if options.no_probe:
            logger.info("No probe application running")
            logger.info("Running without Prometheus exporter, because --no-probe flag was set")
            return
        if self.same_port:
            if options.interface is not None:
                logger.warning(
                    "Ignoring %s: the probes answer on the app port (--app-interface)",
                    described_option(options, "interface"),
                )
            logger.info(
                "Starting probe application with routes %s running integrated on port %d",
                probe_routes(options),
                self.port,
            )
            log_metrics_exporter(options, self.port)
            # The app port opens now, answering probes; app requests get 503 until
            # start-up is done.
            self.open_app_port(inherited)
            return
        logger.info(
            "Starting probe application running on port %d with route %s: %s",
            self.probe_port,
            probe_routes(options),
            self.probes.urls,
        )
        log_metrics_exporter(options, self.probe_port)

    async def run_startup_tasks(self) -> bool:
        options = self.options
        apply = options.check_migrations == "apply" or options.check_migrations_apply
        if not options.command and not options.check_migrations and not apply:
            return True
        loop = asyncio.get_running_loop()

        def held_up(error_trace: str) -> None:  # on the start-up tasks' thread
            loop.call_soon_threadsafe(self.state.startup_held_up, error_trace)

        try:
            done = await asyncio.to_thread(
                run_startup_tasks,
                options.command,
                bool(options.check_migrations),
                apply,
                self.stop_startup,
                options.log_format == "json",
                held_up,
            )
        except StartupFailed as failure:
            await self.fail_startup(f"Start-up failed: {failure}", failure.__cause__ or failure)
            return False
        except Exception as error:
            await self.fail_startup("Start-up failed", error)
            return False
        if not done:
            logger.info("Stopped during start-up")
        return done

    async def fail_startup(self, message: str, error: BaseException | None) -> None:
        """Log (the traceback, if there is an exception, as the record's: the
        ``traceback`` field in JSON), send the failure webhook with it (waiting a
        bounded time), exit 1."""
        logger.error("%s", message, exc_info=error)
        trace = "".join(traceback.format_exception(error)) if error is not None else message
        await self.state.report_failed_start(trace)
        # django-hurricane 1.6's last line of a failed start, which scripts wait for.
        logger.info("Loop will be closed; exiting with status 1")
        self.exit_code = 1

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

    def open_app_port(self, inherited: dict[int, list[socket.socket]]) -> None:
        """Listen on the app port; app requests get 503 until an application is attached."""
        options = self.options
        self.pool = pool = WorkerPool(options.workers, max_size=options.max_workers)
        self.state.backlog = lambda: pool.backlog
        RequestQueueLengthMetric.backlog_source = self.state.backlog
        file_app, prefixes = make_file_application(options, log_tornado_request)
        self.router = RequestRouter(
            self.state,
            container=None,
            probe_app=self.probes.application if self.same_port else None,
            probe_paths=self.probes.paths,
            file_app=file_app,
            file_prefixes=prefixes,
        )
        # Tornado's own body limit sits above ours, so that ours answers 413 first.
        self.app_server = AppHTTPServer(
            self.router,
            limits=ConnectionLimits.from_options(options),
            # Processes sharing the socket take turns (see ACCEPT_PER_WAKEUP).
            accept_per_wakeup=1 if self.child is not None else ACCEPT_PER_WAKEUP,
            max_body_size=options.max_body_size + 2 * 65536,
            max_buffer_size=options.max_buffer_size,
        )
        sockets = self.bind_app_port(inherited)
        self.app_server.add_sockets(sockets)
        self.app_listening = True

    def check_app_port(self) -> None:
        try:
            check_port_free(
                self.options.app_interface,
                self.port,
                "--port",
                described_option(self.options, "app_interface"),
            )
        except ListenError as error:
            raise StartupError(str(error)) from None

    def bind_app_port(self, inherited: dict[int, list[socket.socket]]) -> list[socket.socket]:
        sockets = bind_port(
            self.port,
            "--port",
            inherited,
            self.options.app_interface,
            described_option(self.options, "app_interface"),
        )
        self.app_urls = urls_of(sockets)
        return sockets

    async def start_serving(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Attach the application to the open app port; False when that failed."""
        try:
            self.attach_application(loop)
        except Exception as error:
            await self.fail_startup("Loading the application failed", error)
            return False
        return True

    def attach_application(self, loop: asyncio.AbstractEventLoop) -> None:
        from hurricane.metrics.exposition import route_of as metrics_route_of

        route_of = metrics_route_of if self.state.http_metrics is not None else None
        # None: no one's X-Forwarded-* believed.
        proxies = TrustedProxies.of(self.options.forwarded_allow_ips)
        pool = self.pool
        assert pool is not None  # open_app_port made it
        if not self.uses_asgi():
            self.mode = "WSGI"
            self.router.container = HurricaneWSGIContainer(
                self.build_wsgi_application(), pool, loop, route_of, proxies
            )
            return
        from hurricane.django.asgi import (
            DjangoDispatcher,
            HurricaneASGIContainer,
            LentThreadsDjangoApplication,
            is_django_handler,
            load_asgi_application,
        )

        application = load_asgi_application()
        if not is_django_handler(application):
            self.mode = "ASGI"
            if self.serves_static_through_finders():
                from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

                application = ASGIStaticFilesHandler(application)
            self.router.container = HurricaneASGIContainer(application, route_of, proxies)
            return
        self.mode = "ASGI: async views on the loop, sync views in the pool"
        self.router.container = DjangoDispatcher(
            HurricaneASGIContainer(
                LentThreadsDjangoApplication(application, keep_idle=IDLE_ASYNC_THREADS),
                route_of,
                proxies,
            ),
            HurricaneWSGIContainer(
                self.build_wsgi_application(asgi=True), pool, loop, route_of, proxies
            ),
        )

    # -- signals, drain, exit ---------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        logger.info("%s received: draining", signal.Signals(signum).name)
        if not self.state.started:
            self.stop_startup.set()
            self.finish(0)
            return
        asyncio.ensure_future(self.drain(self.options.shutdown_delay))

    async def drain(self, delay: float, restart: bool = False) -> None:
        state = self.state
        state.start_draining()
        if delay:
            logger.info("Serving for %.1f s more while endpoints update", delay)
            await asyncio.sleep(delay)
        app_server = self.app_server
        assert app_server is not None  # a drain begins once the app port is open
        sockets = app_server.stop_accepting()
        if not restart:
            for sock in sockets:
                sock.close()
        # In-flight requests close their connection after the response; idle
        # keep-alive connections close now.
        for request_conn in list(state.in_flight):
            close_after_response(request_conn)
        app_server.close_idle_connections(state.busy_connections(), state.used_connections)
        deadline = time.monotonic() + self.options.graceful_timeout
        try:
            await asyncio.wait_for(state.all_done.wait(), self.options.graceful_timeout)
            # A connection accepted just before the listener stopped may not have sent
            # its request yet: closing it now would lose that request.
            fresh_until = min(deadline, time.monotonic() + FRESH_CONNECTION_GRACE)
            while app_server.fresh_connections(state.used_connections) and (
                time.monotonic() < fresh_until
            ):
                await asyncio.sleep(0.02)
            await asyncio.wait_for(state.all_done.wait(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            logger.warning(
                "%d requests still running after %.1f s (--graceful-timeout)",
                len(state.in_flight),
                self.options.graceful_timeout,
            )
        app_server.close_idle_connections(set())
        if restart:
            self.exec_restart(sockets)
        await wait_for_delivery(state.last_webhook, DRAIN_WEBHOOK_WAIT, "draining")
        logger.info("Drained; exiting")
        self.finish(0)

    def finish(self, code: int) -> None:
        self.exit_code = code
        if self.stopping is not None and not self.stopping.done():
            self.stopping.set_result(None)

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
            asyncio.ensure_future(self.drain(0.0, restart=True))
            return
        asyncio.get_running_loop().call_later(MEMORY_CHECK_INTERVAL, self.check_memory, max_memory)

    def exec_restart(self, app_sockets: list[socket.socket]) -> None:
        """Replace this process by a fresh one that keeps the listening sockets: new
        connections wait in the kernel's backlog meanwhile, so none is refused."""
        handed = [(self.port, sock) for sock in app_sockets]
        handed += [(self.probe_port, sock) for sock in self.probes.sockets]
        os.environ.update(hand_on_sockets(handed))
        if self.core_keeper is not None:
            self.core_keeper.release()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)


def probe_routes(options: Any) -> str:
    """The probes' paths, as the start-up log names them (django-hurricane 1.6's words)."""
    return (
        f"liveness-probe: {options.liveness_probe}, readiness-probe: "
        f"{options.readiness_probe}, startup-probe: {options.startup_probe}"
    )


def log_metrics_exporter(options: Any, port: int) -> None:
    """Say where /metrics answers, or why it does not (1.6's words)."""
    if options.no_metrics:
        logger.info("Running without Prometheus exporter, because --no-metrics flag was set")
    else:
        logger.info(
            "Starting Prometheus metrics exporter on port %d with route %s", port, options.metrics
        )
