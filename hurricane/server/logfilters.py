"""Log records Hurricane shortens.

A request whose Host is not in ALLOWED_HOSTS makes Django log
``django.security.DisallowedHost`` at ERROR with the exception's traceback. On a
public address, scanners send such requests all day, and each traceback (the same
twenty lines of Django internals every time) buries the logs that matter. The
message itself names the bad host, which is all there is to know.
"""

from __future__ import annotations

import logging
from typing import Any

DISALLOWED_HOST_LOGGER = "django.security.DisallowedHost"


class DropTraceback(logging.Filter):
    """Lets a record through without its exception information: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def configured_in_logging(settings: Any, name: str) -> bool:
    """Whether the project's LOGGING setting configures the logger ``name``."""
    logging_setting = getattr(settings, "LOGGING", None) or {}
    return name in (logging_setting.get("loggers") or {})


def shorten_disallowed_host_log(settings: Any) -> bool:
    """Drop the traceback from ``django.security.DisallowedHost`` records, unless the
    project configured that logger itself (in LOGGING, or by hand). Returns whether
    the filter was installed."""
    if configured_in_logging(settings, DISALLOWED_HOST_LOGGER):
        return False
    disallowed_host = logging.getLogger(DISALLOWED_HOST_LOGGER)
    configured_by_hand = (
        disallowed_host.handlers
        or disallowed_host.filters
        or disallowed_host.level != logging.NOTSET
        or not disallowed_host.propagate
    )
    if configured_by_hand:
        return False
    disallowed_host.addFilter(DropTraceback())
    return True
