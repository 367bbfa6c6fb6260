"""Functions of django-hurricane 1.6's ``hurricane.server`` module, kept under their
names for projects and test suites that import them. Hurricane's own servers do not
call them: they drain on SIGTERM/SIGINT, check the databases in the readiness probe
and before serving (``--check-migrations``), and collect static files with
``--static-watch`` (hurricane.serve.server, .probes, .startup)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from hurricane.platform.startup import check_databases

logger = logging.getLogger("hurricane.server.general")

__all__ = ["check_databases", "signal_handler", "static_watch"]


def signal_handler(signum: Any, frame: Any) -> None:
    """Exit at once (1.6's SIGINT handler; Hurricane's servers drain instead)."""
    logger.error("program exiting gracefully")
    sys.exit(0)


def static_watch() -> None:
    """Collect the static files anew (1.6 ran it when a watched file changed)."""
    from django.core.management import call_command

    try:
        logger.info("Collecting static as static file changed")
        call_command("collectstatic", interactive=False, clear=True)
    except Exception as error:
        logger.error("%s", error)
