"""Start-up tasks: management commands, then the migration check. They run on a
thread of their own while the probe server answers; the app port opens after."""

from __future__ import annotations

import logging
import shlex
import threading

logger = logging.getLogger("hurricane.startup")

# Seconds between two looks at the databases while waiting for migrations.
MIGRATION_CHECK_INTERVAL = 1.0


class StartupFailed(Exception):
    """A start-up task failed; the message says which and why."""


def run_management_commands(commands: list[list[str]]) -> None:
    from django.core.management import call_command

    for words in commands:
        line = shlex.join(words)
        logger.info("Running management command: %s", line)
        try:
            call_command(*words)
        except BaseException as error:  # SystemExit from a command is a failure too
            raise StartupFailed(f"management command {line!r} failed: {error!r}") from error
        logger.info("Management command done: %s", line)


def pending_migrations(alias: str) -> list[str]:
    """The migrations not yet applied on one database (raises if it does not answer)."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[alias]
    connection.ensure_connection()
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


def wait_for_migrations(apply: bool, stop: threading.Event) -> bool:
    """Wait until every database answers and has no pending migration; with ``apply``,
    apply them. Returns False if ``stop`` was set before that."""
    from django.core.management import call_command
    from django.db import connections

    last_report = None
    while not stop.is_set():
        problems = []
        for alias in connections:
            try:
                pending = pending_migrations(alias)
                if pending and apply:
                    logger.info("Applying %d migrations on database %r", len(pending), alias)
                    call_command("migrate", database=alias, interactive=False, verbosity=1)
                    pending = pending_migrations(alias)
                if pending:
                    problems.append(
                        f"{len(pending)} migrations pending on database {alias!r}: "
                        + ", ".join(pending[:5])
                        + (" ..." if len(pending) > 5 else "")
                    )
            except Exception as error:
                problems.append(f"database {alias!r} does not answer: {error}".strip())
                connections[alias].close()
        if not problems:
            logger.info("No migration pending")
            return True
        report = "; ".join(problems)
        if report != last_report:
            logger.info("Waiting for migrations: %s", report)
            last_report = report
        stop.wait(MIGRATION_CHECK_INTERVAL)
    return False


def run_startup_tasks(
    commands: list[list[str]], check_migrations: bool, apply: bool, stop: threading.Event
) -> bool:
    """Run every start-up task in order; returns False when stopped by a signal."""
    from django.db import connections

    try:
        run_management_commands(commands)
        if check_migrations or apply:
            return wait_for_migrations(apply, stop)
        return True
    finally:
        connections.close_all()
