"""Exceptions of django-hurricane 1.6's server API, kept for projects that catch them."""

from hurricane.platform.debugging import IncompatibleOptions

__all__ = ["IncompatibleOptions"]
