"""Lives in :mod:`hurricane.config.masking`; this name stays the same module for
code that imports it."""

import sys

from hurricane.config import masking

sys.modules[__name__] = masking
