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
