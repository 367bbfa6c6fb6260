"""The option table and its resolver live in :mod:`hurricane.config.options`; this
name stays the same module for projects and tools that import it."""

import sys

from hurricane.config import options

sys.modules[__name__] = options
