"""django-hurricane 1.6's ``hurricane.server.wsgi``: the WSGI container lives in
:mod:`hurricane.django.wsgi`; this name stays the same module."""

import sys

from hurricane.django import wsgi

sys.modules[__name__] = wsgi
