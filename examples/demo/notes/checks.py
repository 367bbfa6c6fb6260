"""A custom check tagged ``hurricane``: Hurricane's liveness probe runs it."""

import os

from django.core.checks import Error, register


@register("hurricane")
def demo_not_broken(app_configs, **kwargs):
    # Set DEMO_BROKEN=1 to watch the liveness probe turn to 500.
    if os.environ.get("DEMO_BROKEN"):
        return [Error("DEMO_BROKEN is set", id="notes.E001")]
    return []
