"""How long Hurricane's own database connections may wait on a silent network.

libpq waits forever by default for a server that accepts the connection and never
answers (a hung host, a dead connection pooler), and a query on a kept connection
whose packets vanish (a network partition) waits for TCP to give up: up to 15
minutes on Linux. The connections of the readiness check and of the start-up tasks'
migration check are Hurricane's, on threads of their own. They wait at most
:data:`CONNECT_TIMEOUT` seconds to connect, and a connection whose packets go
unacknowledged for :data:`SILENCE_TIMEOUT_MS` is dropped (``tcp_user_timeout``, with
TCP keepalives for an idle one), so that a probe answers, the readiness check
connects afresh and passes as soon as the database is back, the migration check
looks again (and logs what it waits for), and a SIGTERM during start-up is not held
up by a connect that never ends.
"""

from __future__ import annotations

import functools
from typing import Any

CONNECT_TIMEOUT = 3
SILENCE_TIMEOUT_MS = 5000
# libpq's names for TCP keepalives and the timeout of unacknowledged data; the
# latter needs libpq 12.
SILENCE_OPTIONS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": SILENCE_TIMEOUT_MS,
}
TCP_USER_TIMEOUT_LIBPQ = 120000


@functools.cache
def libpq_version() -> int:
    """The version of the libpq that Django's PostgreSQL backend uses (0 if unknown);
    asked once, not on every readiness check."""
    try:
        import psycopg

        return psycopg.pq.version()
    except Exception:
        pass
    try:
        import psycopg2.extensions

        return psycopg2.extensions.libpq_version()
    except Exception:
        return 0


def bound_connection_waits(connection: Any) -> None:
    """Cap the connect timeout of this thread's PostgreSQL connection at
    :data:`CONNECT_TIMEOUT` (a shorter one of the project's is kept) and add the
    silence bounds the project's OPTIONS do not set. Django's connections are per
    thread: the settings dict is replaced on this thread's connection only, so the
    app's connections keep the project's settings."""
    if connection.vendor != "postgresql":
        return
    options = connection.settings_dict.get("OPTIONS") or {}
    bounded = dict(options)
    try:
        configured = int(options.get("connect_timeout") or 0)
    except (TypeError, ValueError):
        configured = 0
    if not 0 < configured <= CONNECT_TIMEOUT:  # 0 or unset: wait forever
        bounded["connect_timeout"] = CONNECT_TIMEOUT
    with_user_timeout = libpq_version() >= TCP_USER_TIMEOUT_LIBPQ
    for name, value in SILENCE_OPTIONS.items():
        if name == "tcp_user_timeout" and not with_user_timeout:
            continue  # an older libpq refuses the option, and with it the connection
        bounded.setdefault(name, value)
    if bounded != options:
        connection.settings_dict = {**connection.settings_dict, "OPTIONS": bounded}


# What SQLite says when its file or the folder for its journal cannot be written.
SQLITE_CANNOT_WRITE = ("unable to open database file", "readonly database", "read-only")


def read_only_sqlite_hint(connection: Any, error: BaseException) -> str | None:
    """Why a SQLite database cannot be used, with the fix, when the cause is a file
    system it cannot write (a container's read-only root, the usual case): SQLite's
    own words ("unable to open database file") say neither. None for anything else."""
    if connection.vendor != "sqlite" or not any(
        words in str(error).lower() for words in SQLITE_CANNOT_WRITE
    ):
        return None
    import os

    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = os.path.abspath(name)
    folder = os.path.dirname(path)
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return f"the folder {folder} of the SQLite database {path} does not exist"
    if read_only:
        where = f"{folder} is on a read-only file system"
    elif not os.access(folder, os.W_OK):
        where = f"this process (uid {os.getuid()}) may not write in {folder}"
    else:
        return None
    return (
        f"the SQLite database {path} cannot be written: {where}. SQLite writes its "
        "file and a journal beside it: mount a writable volume on that folder (an "
        "emptyDir, or a PersistentVolumeClaim to keep the data), point NAME at one "
        "(/tmp in Hurricane's image), or use PostgreSQL"
    )
