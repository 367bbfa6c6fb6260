"""Hurricane's servers: the app server (:mod:`.app`, :mod:`.wsgi`), the probe server
(:mod:`.probes`) and their lifecycle (:mod:`.runtime`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hurricane.config.options import Options, ServeOptions
from hurricane.server.legacy import check_databases, signal_handler, static_watch

logger = logging.getLogger("hurricane.server.general")

__all__ = ["check_databases", "run_server", "signal_handler", "static_watch"]


def run_server(options: ServeOptions) -> int:
    """Run ``serve`` with resolved options; returns the process exit code."""
    from hurricane.server.processes import Supervisor, child_options, child_role_from_environment
    from hurricane.server.runtime import Server, StartupError

    child = child_role_from_environment()
    if child is not None:  # one of the serving processes of ``--processes N``
        served = child_options(options)
        return run_process(served, lambda handle_signals: Server(served, True, child).run())
    banner = f"Tornado-powered Django web server. Version: {hurricane_version()}"
    watch: Callable[[], None] | None = None
    if options.static_watch:
        static_watch = options.static_watch

        def watch_static() -> None:
            watch_static_files(Path(static_watch).resolve())

        watch = watch_static
        if not options.autoreload:
            logger.warning("--static-watch works with --autoreload only; ignoring it")
    if options.processes > 1:
        if options.autoreload:
            raise StartupError("--processes and --autoreload cannot be combined")
        return run_process(
            options, lambda handle_signals: Supervisor(options, handle_signals).run(), banner=banner
        )
    return run_process(
        options, lambda handle_signals: Server(options, handle_signals).run(), watch, banner=banner
    )


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

    from hurricane.platform.logs import configure_logging
    from hurricane.server.debugging import refuse_forbidden_debugger
    from hurricane.server.runtime import INHERITED_SOCKETS_VARIABLE
    from hurricane.server.startup import run_system_checks

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

    from hurricane.server.runtime import INHERITED_SOCKETS_VARIABLE

    if INHERITED_SOCKETS_VARIABLE not in os.environ and DJANGO_AUTORELOAD_ENV not in os.environ:
        for warning in options.warnings:
            logger.warning(warning)
    for name, source in options.sources.items():
        if source != "default":
            logger.debug("Option %s = %r (from %s)", name, options.shown(name), source)


def attach_debuggers(options: Options) -> None:
    from hurricane.server.debugging import connect_pycharm, debugger_interface, start_debugpy

    if options.debugger:
        start_debugpy(options.debugger_port, *debugger_interface(options))
    if options.pycharm_host:
        connect_pycharm(options.pycharm_host, options.pycharm_port)


def watch_static_files(root: Path, interval: float = 1.0) -> None:
    """With the autoreloader: run collectstatic now, and again whenever a file under
    ``root`` is added, changed or removed (the process is not restarted for that).

    A polling thread of its own, because Django's StatReloader never reports a
    file it had not seen before."""
    from django.core.management import call_command

    def snapshot() -> dict[str, float]:
        files = {}
        for path in root.rglob("*"):
            try:
                if path.is_file():
                    files[str(path)] = path.stat().st_mtime
            except OSError:  # removed while we looked
                pass
        return files

    def collect(reason: str) -> None:
        logger.info("%s: running collectstatic", reason)
        try:
            call_command("collectstatic", interactive=False, verbosity=0)
        except Exception:
            logger.exception("collectstatic failed")

    if not root.exists():
        logger.error("Tried to watch %s, but it does not exist.", root)
        return
    logger.info("Watching path %s.", root)

    def watch() -> None:
        seen = snapshot()
        collect(f"Watching {root}")
        while True:
            time.sleep(interval)
            current = snapshot()
            if current != seen:
                changed = sorted(set(current.items()) ^ set(seen.items()))
                seen = current
                collect(f"{changed[0][0]} changed")

    threading.Thread(target=watch, name="hurricane-static-watch", daemon=True).start()
