"""Hurricane's servers: the app server (:mod:`.app`, :mod:`.wsgi`), the probe server
(:mod:`.probes`) and their lifecycle (:mod:`.runtime`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from hurricane.options import Options

logger = logging.getLogger("hurricane.server")


def run_server(options: Options) -> int:
    """Run ``serve`` with resolved options; returns the process exit code."""
    from hurricane.server.debugging import connect_pycharm, start_debugpy
    from hurricane.server.runtime import Server, configure_logging

    configure_logging(options.debug)
    for name, source in options.sources.items():
        if source != "default":
            logger.debug("Option %s = %r (from %s)", name, getattr(options, name), source)
    if options.static_watch and not options.autoreload:
        logger.warning("--static-watch works with --autoreload only; ignoring it")
    if not options.autoreload:
        attach_debuggers(options, start_debugpy, connect_pycharm)
        return Server(options).run()

    from django.utils import autoreload

    exit_code = 0

    def inner_run() -> None:
        nonlocal exit_code
        attach_debuggers(options, start_debugpy, connect_pycharm)
        if options.static_watch:
            watch_static_files(Path(options.static_watch).resolve())
        # The reloader runs in the main thread; signals are its business.
        exit_code = Server(options, handle_signals=False).run()
        os._exit(exit_code)

    autoreload.run_with_reloader(inner_run)
    return exit_code


def attach_debuggers(options: Options, start_debugpy: Any, connect_pycharm: Any) -> None:
    if options.debugger:
        start_debugpy(options.debugger_port)
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
