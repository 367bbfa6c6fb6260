"""How long Hurricane's own database connections may take to connect.

libpq's default is to wait forever for a server that accepts the connection and
never answers (a hung host, a dead connection pooler). The connections of the
readiness check and of the start-up tasks' migration check are Hurricane's, on
threads of their own: they wait at most :data:`CONNECT_TIMEOUT` seconds, so that
a probe answers, the migration check looks again (and logs what it waits for),
and a SIGTERM during start-up is not held up by a connect that never ends.
"""

from __future__ import annotations

from typing import Any

CONNECT_TIMEOUT = 3


def bound_connect_timeout(connection: Any) -> None:
    """Cap the connect timeout of this thread's PostgreSQL connection at
    :data:`CONNECT_TIMEOUT` (a shorter one of the project's is kept). Django's
    connections are per thread: the settings dict is replaced on this thread's
    connection only, so the app's connections keep the project's settings."""
    if connection.vendor != "postgresql":
        return
    options = connection.settings_dict.get("OPTIONS") or {}
    try:
        configured = int(options.get("connect_timeout") or 0)
    except (TypeError, ValueError):
        configured = 0
    if 0 < configured <= CONNECT_TIMEOUT:  # 0 or unset: wait forever
        return
    connection.settings_dict = {
        **connection.settings_dict,
        "OPTIONS": {**options, "connect_timeout": CONNECT_TIMEOUT},
    }
