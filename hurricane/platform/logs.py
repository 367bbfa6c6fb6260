"""How ``serve`` and ``consume`` log: the ``hurricane`` logger's handler, its text or
JSON format (``--log-format``) and its level (``--log-level``).

The project's ``LOGGING`` wins: a logger it configures keeps its handlers and
format. What it leaves unconfigured (Tornado, asyncio, Django's own loggers) goes to
stdout in the same format; in JSON mode uncaught exceptions too, so that a log
collector can parse every line.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import sys
import threading
import time
from typing import Any

from hurricane.platform.logfilters import configured_in_logging, shorten_disallowed_host_log

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# The attributes every LogRecord has; anything else on a record came from ``extra=``
# and becomes a field of its JSON object.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# Marks the handlers Hurricane installed, so that setting up again replaces them.
_HURRICANE_HANDLER = "_hurricane_handler"


def utc_timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-29T09:30:00.123Z``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``timestamp``, ``level``, ``logger``,
    ``message``, every field given with ``extra=``, and the exception (if any) as
    ``traceback``. Usable in a project's LOGGING as
    ``{"()": "hurricane.platform.logs.JsonFormatter"}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def json_line(level: int, logger_name: str, message: str) -> str:
    """One JSON log line written without the logging machinery: for what must be
    said before (or without) the loggers being set up, such as a bad option."""
    record = logging.makeLogRecord(
        {"levelno": level, "levelname": logging.getLevelName(level), "name": logger_name}
    )
    record.msg = message
    return JsonFormatter().format(record)


class LoggedLines(io.TextIOBase):
    """A text stream whose every line becomes a log record of ``logger`` at ``level``,
    with ``fields`` as its extra keys. It stands for the stdout and stderr of the
    management commands that run at start-up, whose plain text would otherwise sit
    among the JSON lines. A line is logged once it is complete (``migrate`` writes
    ``Applying x...`` and ``OK`` apart, flushing between them); blank lines are not
    logged."""

    def __init__(self, logger: logging.Logger, level: int, **fields: Any) -> None:
        super().__init__()
        self.logger = logger
        self.level = level
        self.fields = fields
        self.pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # no colours: Django's OutputWrapper asks

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.log(line)
        return len(text)

    def log(self, line: str) -> None:
        if line.strip():
            self.logger.log(self.level, "%s", line.rstrip(), extra=self.fields)

    def close(self) -> None:
        if not self.closed and self.pending:
            self.log(self.pending)
            self.pending = ""
        super().close()


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def make_handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(make_formatter(log_format))
    setattr(handler, _HURRICANE_HANDLER, True)
    return handler


class RootRecords(logging.Filter):
    """For the root logger's JSON handler: leaves out the records of loggers that have
    an output of their own (``hurricane``, and those the project's LOGGING gives
    handlers), which would otherwise be written twice; and, when it stands in for
    Django's default handlers, Django's records below ``django_level``."""

    def __init__(self, with_own_output: set[str], django_level: int) -> None:
        super().__init__()
        self.names = with_own_output
        self.prefixes = tuple(f"{name}." for name in with_own_output)
        self.django_level = django_level

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name in self.names or name.startswith(self.prefixes):
            return False
        if record.levelno < self.django_level and (name == "django" or name.startswith("django.")):
            return False
        return True


def _remove_hurricane_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _HURRICANE_HANDLER, False):
            logger.removeHandler(handler)


def hurricane_level(options: Any, hurricane_logger: logging.Logger) -> int | None:
    """``--log-level`` when given; else DEBUG with ``--debug``; else the level the
    project set; else INFO. None: leave the level as it is."""
    if options.sources.get("log_level", "default") != "default":
        return logging.getLevelName(options.log_level)
    if options.debug:
        return logging.DEBUG
    if hurricane_logger.level == logging.NOTSET:
        return logging.getLevelName(options.log_level)
    return None


def configure_logging(options: Any, settings: Any) -> None:
    """Set up the ``hurricane`` logger (and everything else that is not configured)
    for ``--log-format`` and ``--log-level``, now and after every later
    ``django.setup()``."""
    apply_logging_options(options, settings)
    reapply_after_django_setup(options, settings)


def reapply_after_django_setup(options: Any, settings: Any) -> None:
    """``django.setup()`` applies Django's logging configuration again (a project's
    wsgi.py or asgi.py calls it when the server loads the application): Django's
    default console handler comes back and LOGGING's levels are set again. Hurricane's
    set-up follows each such run."""
    import django.utils.log

    configure = django.utils.log.configure_logging
    original = getattr(configure, "__wrapped__", configure)

    @functools.wraps(original)
    def configure_then_apply_options(logging_config: Any, logging_settings: Any) -> None:
        original(logging_config, logging_settings)
        apply_logging_options(options, settings)

    django.utils.log.configure_logging = configure_then_apply_options


def apply_logging_options(options: Any, settings: Any) -> None:
    log_format = options.log_format
    hurricane_logger = logging.getLogger("hurricane")
    root = logging.getLogger()
    _remove_hurricane_handlers(hurricane_logger)
    _remove_hurricane_handlers(root)

    level = hurricane_level(options, hurricane_logger)
    if level is not None:
        hurricane_logger.setLevel(level)

    # A handler on ``hurricane`` (from LOGGING, or added by hand) is the project's
    # choice. In text mode, as it always was, so is one on the root logger; JSON mode
    # asks for JSON from Hurricane whatever the root writes.
    if not hurricane_logger.handlers and (log_format == "json" or not root.handlers):
        hurricane_logger.addHandler(make_handler(log_format))
        hurricane_logger.propagate = False

    shorten_disallowed_host_log(settings)
    route_unconfigured_records(settings, root, log_format)
    if log_format == "json":
        log_uncaught_exceptions()
        # A Python warning (a naive datetime given to a DateTimeField, a deprecation)
        # is written to stderr as two plain lines; as a record of ``py.warnings`` it is
        # one JSON line like the rest.
        logging.captureWarnings(True)


def route_unconfigured_records(settings: Any, root: logging.Logger, log_format: str) -> None:
    """Route what no one configured through one handler on the root logger, in the
    chosen format: Tornado, asyncio, Django (a view's exception from ``django.request``
    with its traceback: without this, Django sends it to ADMINS by mail only, and
    ``kubectl logs`` shows a 500 without its cause) and warnings."""
    logging_setting = getattr(settings, "LOGGING", None) or {}
    with_own_output = {
        name
        for name, config in (logging_setting.get("loggers") or {}).items()
        if name and (config or {}).get("handlers")
    }
    with_own_output.add("hurricane")
    django_console = [] if configured_in_logging(settings, "django") else django_console_handlers()
    if root.handlers:
        # The project decided where the root's records go; only Django's own console
        # handler (which writes in DEBUG) is made JSON.
        if log_format == "json":
            json_formatter = JsonFormatter()
            for handler in django_console:
                handler.setFormatter(json_formatter)
        return
    # The root handler stands in for Django's default console handler, showing what
    # Django's defaults show: everything in DEBUG; else its errors (what it would mail
    # to ADMINS: a view's exception with its traceback), not one warning per 404.
    django_level = logging.NOTSET
    if django_console and not getattr(settings, "DEBUG", False):
        django_level = logging.ERROR
    handler = make_handler(log_format)
    handler.addFilter(RootRecords(with_own_output, django_level))
    root.addHandler(handler)
    django_logger = logging.getLogger("django")
    for console in django_console:
        django_logger.removeHandler(console)


def django_console_handlers() -> list[logging.Handler]:
    """The stream handlers of Django's default logging config on the ``django`` logger."""
    return [
        handler
        for handler in logging.getLogger("django").handlers
        if type(handler) is logging.StreamHandler
    ]


def log_uncaught_exceptions() -> None:
    """Uncaught exceptions (main thread and others) as log records, not bare tracebacks."""
    uncaught = logging.getLogger("hurricane.uncaught")

    def main_hook(exc_type: Any, exc_value: Any, exc_traceback: Any) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc_value, exc_traceback)
            return
        uncaught.critical("Uncaught exception", exc_info=(exc_type, exc_value, exc_traceback))

    def thread_hook(args: Any) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "unknown"
        uncaught.error(
            "Uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
