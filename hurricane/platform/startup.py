"""Start-up tasks: management commands, then the migration check. They run on a
thread of their own while the probe server answers; the app port opens after.

Django's system checks run before them, before anything listens."""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from hurricane.config.masking import MASK, is_secret, redacted
from hurricane.config.options import variable_of
from hurricane.django.databases import bound_connection_waits, read_only_sqlite_hint
from hurricane.platform.logs import LoggedLines

logger = logging.getLogger("hurricane.startup")
# django-hurricane 1.6's lines keep its logger.
general_logger = logging.getLogger("hurricane.server.general")

# Seconds between two looks at the databases while waiting for migrations.
MIGRATION_CHECK_INTERVAL = 1.0
# Seconds after which an unchanged reason for waiting is logged again (a WARNING, with
# how long the wait has lasted): a start held up for minutes is never silent.
WAIT_REPEAT_INTERVAL = 30.0


class StartupError(Exception):
    """The server cannot start (a port is taken, a debugger is missing, a system check
    fails, ...): one line for the user, and exit code 1."""


class StartupFailed(Exception):
    """A start-up task failed; the message says which and why."""


def run_system_checks() -> None:
    """Django's system checks, as Django runs them before a management command, but
    reported through the ``hurricane.startup`` logger (a record per message, so one
    JSON line each with ``--log-format json``) instead of as a block of text on stderr.
    An error stops the start."""
    from django.core.checks import ERROR, run_checks

    messages = [message for message in run_checks() if not message.is_silenced()]
    for message in messages:
        logger.log(message.level, "%s", message, extra={"check_id": message.id})
    errors = sum(1 for message in messages if message.level >= ERROR)
    if errors:
        plural = "s" if errors > 1 else ""
        raise StartupError(f"Django's system checks found {errors} error{plural} (logged above)")


def call_command_logged(json_output: bool, name: str, *args: Any, **options: Any) -> None:
    """``call_command``; with ``json_output``, what the command writes becomes log
    records of ``hurricane.startup`` (stdout at INFO, stderr at WARNING, each with the
    field ``command``), so that every line of the process's output is JSON."""
    from django.core.management import call_command

    if not json_output:
        call_command(name, *args, **options)
        return
    with (
        contextlib.closing(LoggedLines(logger, logging.INFO, command=name)) as stdout,
        contextlib.closing(LoggedLines(logger, logging.WARNING, command=name)) as stderr,
    ):
        call_command(name, *args, stdout=stdout, stderr=stderr, **options)


def run_management_commands(commands: Sequence[Sequence[str]], json_output: bool = False) -> None:
    """Run each command in turn. Commands read from a file (HURRICANE_COMMANDS_FILE)
    are a secret, as every value so read: the log names them by their place in the
    file, and a failure's message masks every word of the command."""
    variable = variable_of("command")
    secret = is_secret(variable)
    if commands:
        logger.info("Starting execution of management commands")
    for number, words in enumerate(commands, 1):
        line = shlex.join(words)
        shown = f"{MASK} (command {number} of {variable}_FILE)" if secret else line
        logger.info("Running management command: %s", shown)
        try:
            call_command_logged(json_output, *words)
        except BaseException as error:  # SystemExit from a command is a failure too
            if not secret:
                raise StartupFailed(f"management command {line!r} failed: {error!r}") from error
            # Its frames say where it failed; its message and those of the exceptions
            # before it may quote the command, so they stay behind.
            failure = StartupFailed(
                f"management command {shown} failed: {redacted(repr(error), words)}"
            )
            raise failure.with_traceback(error.__traceback__) from None
        logger.info("Management command done: %s", shown)


def pending_migrations(alias: str) -> list[str]:
    """The migrations not yet applied on one database (raises if it does not answer)."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[alias]
    bound_connection_waits(connection)  # a hung database host must not hang the start
    connection.ensure_connection()
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


def check_databases() -> bool:
    """django-hurricane 1.6's ``hurricane.server.check_databases``, which a project
    may replace: whether every database answers ``SELECT 1``; each answer logged."""
    from django.db import connections

    for alias in connections:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as error:
            general_logger.warning("Database command execution has failed with %s", error)
            return False
    general_logger.info("Database was checked successfully")
    return True


def run_replaced_database_check() -> None:
    """Run ``hurricane.server.check_databases`` if the project replaced it, as
    django-hurricane 1.6 let projects do to check their databases their own way: it
    raising, or returning False, counts as the databases not answering."""
    # Read from django-hurricane 1.6's package, where the project assigned it: a
    # project that replaced it has imported that package (importing it here would
    # make hurricane.platform depend on the 1.6 facade above it).
    package = sys.modules.get("hurricane.server")
    replaced = getattr(package, "check_databases", check_databases)
    if replaced is not check_databases and replaced() is False:
        raise RuntimeError("hurricane.server.check_databases returned False")


def wait_for_migrations(
    apply: bool,
    stop: threading.Event,
    json_output: bool = False,
    held_up: Callable[[str], None] | None = None,
) -> bool:
    """Wait until every database answers and has no pending migration; with ``apply``,
    apply them. Returns False if ``stop`` was set before that. ``held_up`` gets the
    traceback of each failed look at a database (the "warning" startup webhook)."""
    from django.db import connections

    last_report = None
    began = last_said = time.monotonic()
    while not stop.is_set():
        problems = []
        try:
            run_replaced_database_check()
        except Exception as error:
            problems.append(f"Database command execution has failed with {error}")
            if held_up is not None:
                held_up(traceback.format_exc())
        for alias in connections if not problems else ():
            try:
                pending = pending_migrations(alias)
                if pending and apply:
                    logger.info("Applying %d migrations on database %r", len(pending), alias)
                    call_command_logged(
                        json_output, "migrate", database=alias, interactive=False, verbosity=1
                    )
                    pending = pending_migrations(alias)
                if pending:
                    problems.append(
                        f"{len(pending)} migrations pending on database {alias!r}: "
                        + ", ".join(pending[:5])
                        + (" ..." if len(pending) > 5 else "")
                    )
            except Exception as error:
                # django-hurricane 1.6's words, and then which database (and, for a
                # SQLite file that cannot be written, why and what to do).
                hint = read_only_sqlite_hint(connections[alias], error)
                problems.append(
                    f"Database command execution has failed with {error} (database {alias!r})"
                    + (f": {hint}" if hint else "")
                )
                connections[alias].close()
                if held_up is not None:
                    held_up(traceback.format_exc())
        if not problems:
            logger.info("Database was checked successfully")
            logger.info("No pending migrations")
            return True
        report = "; ".join(problems)
        now = time.monotonic()
        if report != last_report:
            logger.info("Waiting for migrations: %s", report)
            last_report, last_said = report, now
        elif now - last_said >= WAIT_REPEAT_INTERVAL:
            # Never a silent wait: the same reason again, with how long it has lasted.
            logger.warning("Still waiting for migrations after %d s: %s", now - began, report)
            last_said = now
        stop.wait(MIGRATION_CHECK_INTERVAL)
    return False


def run_startup_tasks(
    commands: Sequence[Sequence[str]],
    check_migrations: bool,
    apply: bool,
    stop: threading.Event,
    json_output: bool = False,
    held_up: Callable[[str], None] | None = None,
) -> bool:
    """Run every start-up task in order; returns False when stopped by a signal.
    ``held_up``: see wait_for_migrations."""
    from django.db import connections

    try:
        run_management_commands(commands, json_output)
        if check_migrations or apply:
            return wait_for_migrations(apply, stop, json_output, held_up)
        return True
    finally:
        connections.close_all()
