"""What every ``serve`` process goes through, whatever it runs: the one of its own,
the supervisor of ``--processes`` and each of its serving processes.

:class:`Lifecycle` starts the probes, runs the start-up tasks, takes the signals,
drains and ends the process; what runs in between (a server answering requests,
or the serving processes of a supervisor) is its :class:`Work`, as gunicorn keeps
its arbiter apart from its workers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
import traceback
from typing import Protocol

from hurricane.config.options import ServeOptions, described_option, probe_port_of
from hurricane.http.eventloop import install_tornado_ioloop, loop_kind
from hurricane.http.server import ConnectionLimits
from hurricane.platform.listening import ListenError, bind_port, check_port_free, urls_of
from hurricane.platform.probes import ProbeServer, start_probe_server
from hurricane.platform.process import DRAIN_WEBHOOK_WAIT, handle_stop_signals, wait_for_delivery
from hurricane.platform.startup import StartupError, StartupFailed, run_startup_tasks
from hurricane.platform.state import ProbeState

logger = logging.getLogger("hurricane.server.general")


class Work(Protocol):
    """What a :class:`Lifecycle` runs once the start-up tasks are done."""

    #: The app port listens (it opens early when the probes answer on it).
    listening: bool

    def open_app_port(self, inherited: dict[int, list[socket.socket]]) -> None:
        """Listen on the app port; app requests get 503 until ``start()``."""

    async def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Serve; False when that failed (and was reported: Lifecycle.fail_startup)."""
        ...

    def serving(self, restarted: bool) -> None:
        """The process serves: say so in the log, and keep it going."""

    async def stop(self, restart: bool) -> None:
        """The middle of a drain: take no more work and finish what is in hand;
        ``restart``: an in-place restart takes over the listening sockets."""


class Lifecycle:
    """One serve process's life, around its :class:`Work`: ``run()`` starts the
    probes, runs the start-up tasks, starts the work and waits; ``on_signal()`` and
    ``drain()`` end it."""

    def __init__(
        self, options: ServeOptions, state: ProbeState, work: Work, handle_signals: bool = True
    ) -> None:
        self.options = options
        self.state = state
        self.work = work
        self.handle_signals = handle_signals
        self.port: int = options.port
        self.probe_port: int = probe_port_of(options)
        self.same_port = self.probe_port == self.port
        self.probes = ProbeServer()
        self.began = time.monotonic()
        self.exit_code = 0
        # Set by a signal during start-up: the start-up tasks stop at their next step.
        self.stop_startup = threading.Event()
        # Done when the process is to exit; made by run(), on its loop.
        self.stopping: asyncio.Future | None = None

    async def run(self, inherited: dict[int, list[socket.socket]], restarted: bool) -> int:
        """The process's life until it is to exit; returns its exit code. ``inherited``:
        the listening sockets a previous process handed on; ``restarted``: this is an
        in-place restart, whose start-up tasks already ran."""
        loop = asyncio.get_running_loop()
        install_tornado_ioloop()
        self.stopping = loop.create_future()
        if self.handle_signals:
            handle_stop_signals(loop, self.on_signal)
        try:
            if self.port not in inherited:
                # The app port opens after the start-up tasks: a taken port or a bad
                # --app-interface is reported now, before they run in vain.
                self.check_app_port()
            self.start_probes(inherited)
        except StartupError:
            for sockets in inherited.values():
                for sock in sockets:
                    sock.close()
            raise
        if not restarted and not await self.run_startup_tasks():
            return self.exit_code
        if self.stop_startup.is_set():  # a signal arrived as the last task ended
            return self.exit_code
        work = self.work
        if not work.listening:
            work.open_app_port(inherited)
        if not await work.start(loop):
            return self.exit_code
        self.state.mark_started(time.monotonic() - self.began)
        work.serving(restarted)
        await self.stopping
        return self.exit_code

    # -- start-up ------------------------------------------------------------------------

    def start_probes(self, inherited: dict[int, list[socket.socket]]) -> None:
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
            self.work.open_app_port(inherited)
            return
        logger.info(
            "Starting probe application running on port %d with route %s: %s",
            self.probe_port,
            probe_routes(options),
            self.probes.urls,
        )
        log_metrics_exporter(options, self.probe_port)

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

    def bind_app_port(
        self, inherited: dict[int, list[socket.socket]]
    ) -> tuple[list[socket.socket], str]:
        """The app port's sockets, and where they listen for the start-up log."""
        sockets = bind_port(
            self.port,
            "--port",
            inherited,
            self.options.app_interface,
            described_option(self.options, "app_interface"),
        )
        return sockets, urls_of(sockets)

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

    def announce(self, mode: str, core_note: str, app_urls: str, restarted: bool) -> None:
        """The start-up lines of the process Kubernetes sees (1.6's first)."""
        options = self.options
        logger.info("Starting HTTP Server on port %d", self.port)
        if options.no_probe:
            probes = "off"
        elif self.same_port:
            probes = "on the app port"
        else:
            probes = self.probes.urls
        logger.info(
            "Serving on port %d (%s; %d workers; %s%s): %s; probes: %s%s",
            self.port,
            mode,
            options.workers,
            loop_kind(options.loop),
            core_note,
            app_urls,
            probes,
            " (after an in-place restart)" if restarted else "",
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
        self.state.start_draining()
        if delay:
            logger.info("Serving for %.1f s more while endpoints update", delay)
            await asyncio.sleep(delay)
        await self.work.stop(restart)
        await wait_for_delivery(self.state.last_webhook, DRAIN_WEBHOOK_WAIT, "draining")
        logger.info("Drained; exiting")
        self.finish(0)

    def finish(self, code: int) -> None:
        self.exit_code = code
        if self.stopping is not None and not self.stopping.done():
            self.stopping.set_result(None)


def probe_routes(options: ServeOptions) -> str:
    """The probes' paths, as the start-up log names them (django-hurricane 1.6's words)."""
    return (
        f"liveness-probe: {options.liveness_probe}, readiness-probe: "
        f"{options.readiness_probe}, startup-probe: {options.startup_probe}"
    )


def log_metrics_exporter(options: ServeOptions, port: int) -> None:
    """Say where /metrics answers, or why it does not (1.6's words)."""
    if options.no_metrics:
        logger.info("Running without Prometheus exporter, because --no-metrics flag was set")
    else:
        logger.info(
            "Starting Prometheus metrics exporter on port %d with route %s", port, options.metrics
        )
