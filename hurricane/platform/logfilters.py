"""Log records Hurricane shortens.

A request whose Host is not in ALLOWED_HOSTS makes Django log
``django.security.DisallowedHost`` at ERROR with the exception's traceback. On a
public address, scanners send such requests all day, and each traceback (the same
twenty lines of Django internals every time) buries the logs that matter. The
message itself names the bad host, which is all there is to know.

pika, the AMQP client of ``consume``, logs every failure to reach the broker at
ERROR, in five to seven records with tracebacks, and again at every attempt to
reconnect; Hurricane reports each such failure itself, in one line.
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
    if configured_by_hand(disallowed_host):
        return False
    disallowed_host.addFilter(DropTraceback())
    return True


def configured_by_hand(logger: logging.Logger) -> bool:
    """Whether someone gave ``logger`` a handler, a filter or a level of its own (a
    library's NullHandler does not count: pika adds one to its logger itself)."""
    handlers = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
    return bool(
        handlers or logger.filters or logger.level != logging.NOTSET or not logger.propagate
    )


def quiet_pika_log(settings: Any) -> bool:
    """Show only pika's CRITICAL records, unless Hurricane logs at DEBUG or the project
    configured the ``pika`` logger (in LOGGING, or by hand). Returns whether it did."""
    pika_logger = logging.getLogger("pika")
    if configured_in_logging(settings, "pika") or configured_by_hand(pika_logger):
        return False
    if logging.getLogger("hurricane").getEffectiveLevel() <= logging.DEBUG:
        return False
    pika_logger.setLevel(logging.CRITICAL)
    return True
