"""django-hurricane 1.6's ``hurricane.server`` module and its submodules' paths
(``.wsgi``, ``.django``, ``.debugging``, ``.loggers``, ``.exceptions``), kept for
projects that import them. Hurricane's app server is :mod:`hurricane.serve`."""

from hurricane.server.legacy import check_databases, signal_handler, static_watch

__all__ = ["check_databases", "signal_handler", "static_watch"]
