"""Exceptions of django-hurricane 1.6's server API, kept for projects that catch them."""


class IncompatibleOptions(Exception):
    """Options that cannot be used together."""
