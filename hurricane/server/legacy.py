"""Functions of django-hurricane 1.6's ``hurricane.server`` module, kept under their
names for projects and test suites that import them. Hurricane's own servers do not
call them: they drain on SIGTERM/SIGINT, check the databases in the readiness probe
and before serving (``--check-migrations``), and collect static files with
``--static-watch`` (hurricane.server.runtime, .probes, .startup)."""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger("hurricane.server.general")


def signal_handler(signum: Any, frame: Any) -> None:
    """Exit at once (1.6's SIGINT handler; Hurricane's servers drain instead)."""
    logger.error("program exiting gracefully")
    sys.exit(0)


def check_databases() -> bool:
    """Whether every database answers ``SELECT 1``; each answer logged."""
    from django.db import connections

    for alias in connections:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as error:
            logger.warning("Database command execution has failed with %s", error)
            return False
    logger.info("Database was checked successfully")
    return True


def static_watch() -> None:
    """Collect the static files anew (1.6 ran it when a watched file changed)."""
    from django.core.management import call_command

    try:
        logger.info("Collecting static as static file changed")
        call_command("collectstatic", interactive=False, clear=True)
    except Exception as error:
        logger.error("%s", error)
