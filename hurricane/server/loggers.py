"""django-hurricane 1.6's loggers, by their names, for projects that import them or
configure them in ``LOGGING``: ``hurricane.server.general``, ``.access``,
``.application`` and ``.metrics``. With structlog installed they are structlog
loggers (``STRUCTLOG_ENABLED``), as in 1.6; Hurricane's own records go through the
standard library's logging either way (see hurricane.platform.logs)."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

STRUCTLOG_ENABLED = importlib.util.find_spec("structlog") is not None


def _logger(name: str) -> Any:
    if STRUCTLOG_ENABLED:
        import structlog

        return structlog.get_logger(name)
    return logging.getLogger(name)


logger = _logger("hurricane.server.general")
access_log = _logger("hurricane.server.access")
app_log = _logger("hurricane.server.application")
metrics_log = _logger("hurricane.server.metrics")
