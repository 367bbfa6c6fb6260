"""Checks the probes run; a test makes them fail by creating a flag file."""

import os

from django.core.checks import Error, register


def _flag(variable: str) -> bool:
    path = os.environ.get(variable)
    return bool(path) and os.path.exists(path)


@register("hurricane")
def liveness_flag(app_configs, **kwargs):
    if _flag("TEST_LIVENESS_FAIL_FLAG"):
        return [Error("liveness flag file exists", id="testapp.E001")]
    return []


@register("readiness")
def readiness_flag(app_configs, **kwargs):
    if _flag("TEST_READINESS_FAIL_FLAG"):
        return [Error("readiness flag file exists", id="testapp.E002")]
    return []


@register("liveness")
def liveness_raises(app_configs, **kwargs):
    """Raises what the flag file names, as a check that talks to a database may: its
    error names the database's host and user."""
    path = os.environ.get("TEST_LIVENESS_RAISE_FLAG")
    if not path or not os.path.exists(path):
        return []
    with open(path) as flag:
        kind = flag.read().strip()
    if kind == "database":
        from django.db import OperationalError

        raise OperationalError(
            'connection to server at "db.internal" (10.0.0.5), port 5432 failed: '
            'FATAL: password authentication failed for user "svc_orders_rw"'
        )
    from django.core.management.base import SystemCheckError

    raise SystemCheckError("the cache at redis://:hunter2@cache.internal answers no more")
