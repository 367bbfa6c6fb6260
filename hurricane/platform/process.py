"""What starts and ends a Hurricane process, serve's or consume's: logging and the
banner, the system checks, the debuggers, Django's autoreloader, a second signal that
means "now", and the wait for the last webhooks before exit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from hurricane.config.options import Options
from hurricane.platform.listening import INHERITED_SOCKETS_VARIABLE

logger = logging.getLogger("hurricane.server.general")

# Seconds to wait for the failure webhook before a failed start-up exits.
FAILURE_WEBHOOK_WAIT = 20.0
# Seconds a drained process waits, at most, for its webhooks (the readiness one sent
# as the drain began) before it exits: the pod's grace period is running.
DRAIN_WEBHOOK_WAIT = 5.0


def hurricane_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("django-hurricane")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def run_process(
    options: Options,
    run: Callable[[bool], int],
    also_in_process: Callable[[], None] | None = None,
    banner: str | None = None,
) -> int:
    """Set up logging and debuggers, then ``run(handle_signals)`` (the serve or consume
    runtime) and return its exit code; with ``--autoreload``, in a child process that
    Django's reloader restarts when code changes. ``banner`` is the first line logged
    (django-hurricane 1.6's, which scripts wait for)."""
    from django.conf import settings

    from hurricane.platform.debugging import refuse_forbidden_debugger
    from hurricane.platform.logs import configure_logging
    from hurricane.platform.startup import run_system_checks

    refuse_forbidden_debugger(options)
    configure_logging(options, settings)
    if banner and INHERITED_SOCKETS_VARIABLE not in os.environ:  # not after a restart
        logger.info("%s", banner)
    log_options(options)
    if not options.skip_checks and INHERITED_SOCKETS_VARIABLE not in os.environ:
        # Once per start: not again in the serving processes of --processes, nor
        # after an in-place restart (both inherit the listening sockets).
        run_system_checks()
    if not options.autoreload:
        attach_debuggers(options)
        return run(True)

    from django.utils import autoreload

    def inner_run() -> None:
        logger.info("Autoreload was performed")
        attach_debuggers(options)
        if also_in_process is not None:
            also_in_process()
        # The reloader runs in the main thread; signals are its business.
        os._exit(run(False))

    autoreload.run_with_reloader(inner_run)
    return 0


def log_options(options: Options) -> None:
    """The resolver's warnings (hurricane.config.options), once per start: not again in a
    process Django's autoreloader restarts, nor after an in-place restart. Then, at
    debug level, each option not left at its default, and where it came from; the
    value of a secret (hurricane.config.masking) as ``*****``."""
    from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

    if INHERITED_SOCKETS_VARIABLE not in os.environ and DJANGO_AUTORELOAD_ENV not in os.environ:
        for warning in options.warnings:
            logger.warning(warning)
    for name, source in options.sources.items():
        if source != "default":
            logger.debug("Option %s = %r (from %s)", name, options.shown(name), source)


def attach_debuggers(options: Options) -> None:
    from hurricane.platform.debugging import connect_pycharm, debugger_interface, start_debugpy

    if options.debugger:
        start_debugpy(options.debugger_port, *debugger_interface(options))
    if options.pycharm_host:
        connect_pycharm(options.pycharm_host, options.pycharm_port)


async def wait_for_delivery(
    delivery: Any, timeout: float = FAILURE_WEBHOOK_WAIT, what: str = "failure"
) -> None:
    """Give the last webhook (and those before it) a chance to leave before the
    process exits."""
    if delivery is not None:
        try:
            await asyncio.wait_for(asyncio.wrap_future(delivery), timeout)
        except asyncio.TimeoutError:
            logger.warning("The %s webhook was not delivered in time", what)


def handle_stop_signals(loop: asyncio.AbstractEventLoop, on_first: Callable[[int], None]) -> None:
    """SIGTERM and SIGINT, as serve and consume both take them: the first calls
    ``on_first(signum)`` (drain, or finish the message in hand); a second one of
    either means "now" (exit_on_second_signal)."""
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        exit_on_second_signal(signum, received)
        on_first(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def exit_on_second_signal(signum: int, signals_received: int) -> None:
    """A second SIGTERM/SIGINT means "now": exit without waiting for anything."""
    if signals_received > 1:
        logger.warning("Second %s: exiting at once", signal.Signals(signum).name)
        logging.shutdown()
        os._exit(128 + signum)
