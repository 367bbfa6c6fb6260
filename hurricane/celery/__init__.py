"""Hurricane's probes, webhooks and metrics for Celery workers and beat.

In the module that makes the Celery app::

    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    hurricane.celery.install(app)

then ``celery -A proj worker`` and ``celery -A proj beat`` answer the startup,
readiness and liveness probes and serve /metrics on ``HURRICANE_PROBE_PORT`` (8001).
docs/celery.md says what each probe means there.
"""

from __future__ import annotations

import time
from typing import Any

from hurricane.celery.common import CelerySetupError

# Start-up is counted from here: the app's module is imported early in the process.
_LOADED = time.monotonic()

__all__ = ["CelerySetupError", "install"]


def install(app: Any) -> None:
    """Give ``app``'s workers and beat Hurricane's probes. Call it once, where the app
    is made; nothing starts until Celery starts a worker or beat."""
    from hurricane.celery.beat import install_beat
    from hurricane.celery.worker import install_worker

    if getattr(app, "_hurricane_installed", False):
        return
    app._hurricane_installed = True
    install_worker(app)
    install_beat(app, _LOADED)
