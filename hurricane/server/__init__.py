"""Hurricane's servers: the app server (:mod:`.app`, :mod:`.wsgi`), the probe server
(:mod:`.probes`) and their lifecycle (:mod:`.runtime`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hurricane.options import Options

logger = logging.getLogger("hurricane.server")


def run_server(options: Options) -> int:
    """Run ``serve`` with resolved options; returns the process exit code."""
    from hurricane.server.debugging import connect_pycharm, start_debugpy
    from hurricane.server.runtime import Server, configure_logging

    configure_logging(options.debug)
    if options.static_watch and not options.autoreload:
        logger.warning("--static-watch works with --autoreload only; ignoring it")
    if not options.autoreload:
        attach_debuggers(options, start_debugpy, connect_pycharm)
        return Server(options).run()

    from django.utils import autoreload

    if options.static_watch:
        watch_static_files(Path(options.static_watch))
    exit_code = 0

    def inner_run() -> None:
        nonlocal exit_code
        attach_debuggers(options, start_debugpy, connect_pycharm)
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


def watch_static_files(root: Path) -> None:
    """With the autoreloader: watch ``root`` and run collectstatic on a change there,
    instead of restarting the process."""
    from django.core.management import call_command
    from django.utils.autoreload import autoreload_started, file_changed

    root = root.resolve()

    def on_started(sender: Any, **kwargs: Any) -> None:
        sender.watch_dir(root, "**/*")

    def on_changed(sender: Any, file_path: Path, **kwargs: Any) -> bool | None:
        if root not in Path(file_path).resolve().parents:
            return None
        logger.info("%s changed: running collectstatic", file_path)
        call_command("collectstatic", interactive=False, verbosity=0)
        return True  # handled: no restart

    autoreload_started.connect(on_started, weak=False)
    file_changed.connect(on_changed, weak=False)
