"""``python manage.py serve``: Django on Tornado, with Kubernetes probes."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hurricane.options import SERVE_OPTIONS, OptionError, add_arguments, resolve


class Command(BaseCommand):
    help = (
        "Serve the Django project with Tornado, with startup/readiness/liveness probes and "
        "Prometheus metrics on the probe port. Every option can also be set with the Django "
        "setting or environment variable HURRICANE_<OPTION> (e.g. HURRICANE_PROBE_PORT)."
    )

    def add_arguments(self, parser: Any) -> None:
        add_arguments(parser, SERVE_OPTIONS)

    def handle(self, *args: Any, **command_line: Any) -> None:
        from hurricane.server import run_server
        from hurricane.server.debugging import DebuggerError
        from hurricane.server.runtime import StartupError

        try:
            options = resolve(SERVE_OPTIONS, command_line, settings)
            exit_code = run_server(options)
        except (OptionError, StartupError, DebuggerError) as error:
            raise CommandError(str(error)) from None
        if exit_code:
            sys.exit(exit_code)
