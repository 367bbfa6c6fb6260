"""What a Celery worker and beat share: Django, the options and the probe server.

Celery runs the process here, not Hurricane: the probe server is started from
Celery's own hooks (hurricane.celery.worker, hurricane.celery.beat) and lives on a
thread of its own, as in ``serve`` and ``consume``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import Any

from hurricane.config.options import CeleryOptions, OptionError
from hurricane.http.server import ConnectionLimits
from hurricane.platform.probes import ProbeServer, start_probe_server
from hurricane.platform.process import DRAIN_WEBHOOK_WAIT
from hurricane.platform.state import ProbeState

logger = logging.getLogger("hurricane.celery")

# The probe server of this process, if any: a pool process forked by the worker
# inherits its listening sockets and closes them (close_inherited_probe_sockets), so
# that a pool process left behind by a dead worker cannot hold the probe port.
_probe_server: ProbeServer | None = None


class CelerySetupError(RuntimeError):
    """Hurricane's probes cannot run in this Celery process; one line for the log."""


def setup_django() -> Any:
    """Django's settings, set up: the probes run Django's system checks and query the
    databases. Celery's Django fixup has usually set Django up already."""
    import django
    from django.apps import apps
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise CelerySetupError(
            "Hurricane's Celery probes need Django settings: set DJANGO_SETTINGS_MODULE "
            "before the Celery app is loaded"
        )
    if not apps.ready:
        django.setup()
    return settings


def load_options() -> CeleryOptions:
    """The probe options of this process, from the HURRICANE_* settings and variables;
    their warnings (misspelt names) are logged now."""
    settings = setup_django()
    try:
        options = CeleryOptions.resolve({}, settings)
    except OptionError as error:
        raise CelerySetupError(str(error)) from None
    for warning in options.warnings:
        logger.warning("%s", warning)
    return options


def start_probes(state: ProbeState, options: CeleryOptions, what: str) -> ProbeServer:
    """Start the probe server for ``state`` on ``--probe-port`` (nothing with
    ``--no-probe``); a port that cannot be had stops the process with one line."""
    global _probe_server
    from hurricane.platform.startup import StartupError

    try:
        server = start_probe_server(state, options, options.probe_port, ConnectionLimits.defaults())
    except StartupError as error:
        raise CelerySetupError(f"{what}: {error}") from None
    if server.application is not None:
        logger.info(
            "Hurricane probes of the Celery %s on port %d: %s",
            what,
            options.probe_port,
            server.urls,
        )
    _probe_server = server
    return server


def close_inherited_probe_sockets(**_: Any) -> None:
    """In a pool process just forked: close the probe sockets of the parent. Their
    thread did not survive the fork, so nothing here would answer on them."""
    global _probe_server
    if _probe_server is not None:
        for sock in _probe_server.sockets:
            sock.close()
        _probe_server = None


def wait_for_last_webhook(state: ProbeState, what: str) -> None:
    """Give the last webhook sent (and those before it) a moment to leave before the
    process exits: Celery exits on its own terms, outside any event loop of ours."""
    delivery = state.last_webhook
    if delivery is None:
        return
    try:
        delivery.result(timeout=DRAIN_WEBHOOK_WAIT)
    except concurrent.futures.TimeoutError:
        logger.warning("The %s webhook was not delivered in time", what)
    except Exception:
        logger.warning("The %s webhook failed", what, exc_info=True)
