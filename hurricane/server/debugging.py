"""django-hurricane 1.6's ``hurricane.server.debugging``: the debugger attach lives in
:mod:`hurricane.platform.debugging`; this name stays the same module."""

import sys

from hurricane.platform import debugging

sys.modules[__name__] = debugging
