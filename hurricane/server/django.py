"""The Django-facing handlers, under the module path of the original library.

The probe handlers live in :mod:`hurricane.platform.probes`; the app side is the
request router of :mod:`hurricane.http.exchange`, which hands Django requests to the
WSGI worker pool of :mod:`hurricane.django.wsgi`.
"""

from hurricane.http.exchange import RequestRouter as DjangoHandler
from hurricane.platform.probes import (
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
