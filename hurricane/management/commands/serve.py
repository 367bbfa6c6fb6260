"""``python manage.py serve``: Django on Tornado, with Kubernetes probes."""

from __future__ import annotations

from hurricane.config.options import SERVE_OPTIONS, ServeOptions
from hurricane.management.base import HurricaneCommand


class Command(HurricaneCommand[ServeOptions]):
    help = (
        "Serve the Django project with Tornado, with startup/readiness/liveness probes and "
        "Prometheus metrics on the probe port. Every option can also be set with the Django "
        "setting or environment variable HURRICANE_<OPTION> (e.g. HURRICANE_PROBE_PORT)."
    )
    options_class = ServeOptions
    option_spec = SERVE_OPTIONS
    logger_name = "hurricane.server.general"

    def start(self, options: ServeOptions) -> int:
        from hurricane.serve.main import run_server

        return run_server(options)
