"""Static and media files (``--static``, ``--media``), served from disk on the loop."""

from __future__ import annotations

import logging
import re
from typing import Any

import tornado.web

from hurricane.server.handlers import BodilessApplication, HurricaneHandler, bodiless_application

logger = logging.getLogger("hurricane.server")

FILE_METHODS = frozenset({"GET", "HEAD"})


class FileHandler(HurricaneHandler, tornado.web.StaticFileHandler):
    """Tornado's file handler, without its Server header."""


def make_file_application(
    options: Any, log_function: Any
) -> tuple[BodilessApplication | None, tuple[str, ...]]:
    """The application serving STATIC_ROOT and MEDIA_ROOT, when asked for, and the URL
    prefixes it answers."""
    from django.conf import settings

    handlers: list[Any] = []
    prefixes: list[str] = []

    def add(url: str | None, root: str | None, setting: str) -> None:
        if not url or not root or "://" in url:
            logger.warning("Not serving %s: its URL or root is not a local path", setting)
            return
        prefix = "/" + url.strip("/") + "/"
        handlers.append((re.escape(prefix) + "(.*)", FileHandler, {"path": str(root)}))
        prefixes.append(prefix)

    if options.static and not (settings.DEBUG and staticfiles_installed()):
        add(settings.STATIC_URL, settings.STATIC_ROOT, "STATIC_ROOT")
    if options.media:
        add(settings.MEDIA_URL, settings.MEDIA_ROOT, "MEDIA_ROOT")
    if not handlers:
        return None, ()
    application = bodiless_application(handlers, FILE_METHODS, options.debug, log_function)
    return application, tuple(prefixes)


def staticfiles_installed() -> bool:
    from django.apps import apps

    return apps.is_installed("django.contrib.staticfiles")
