"""``manage.py serve``: one process, a supervisor of ``--processes N``, or one of its
serving processes; with ``--autoreload`` and ``--static-watch``, under Django's
reloader."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hurricane.config.options import ServeOptions
from hurricane.platform.process import hurricane_version, run_process

logger = logging.getLogger("hurricane.server.general")


def run_server(options: ServeOptions) -> int:
    """Run ``serve`` with resolved options; returns the process exit code."""
    from hurricane.serve.server import Server, StartupError
    from hurricane.serve.supervisor import Supervisor, child_options, child_role_from_environment

    child = child_role_from_environment()
    if child is not None:  # one of the serving processes of ``--processes N``
        served = child_options(options)
        return run_process(served, lambda handle_signals: Server(served, True, role=child).run())
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
