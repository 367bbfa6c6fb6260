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
