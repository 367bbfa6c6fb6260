"""The Django-facing handlers, under the module path of the original library.

The probe handlers live in :mod:`hurricane.server.probes`; the app side is the
request router of :mod:`hurricane.server.app`, which hands Django requests to the
WSGI worker pool of :mod:`hurricane.django.wsgi`.
"""

from hurricane.server.app import RequestRouter as DjangoHandler
from hurricane.server.probes import (
    DjangoLivenessHandler,
    DjangoProbeHandler,
    DjangoReadinessHandler,
    DjangoStartupHandler,
)

__all__ = [
    "DjangoHandler",
    "DjangoLivenessHandler",
    "DjangoProbeHandler",
    "DjangoReadinessHandler",
    "DjangoStartupHandler",
]
