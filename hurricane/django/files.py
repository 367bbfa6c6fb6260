"""Static and media files (``--static``, ``--media``), served from disk on the loop.

They get what Django's own responses get from its security middleware, and what a
site serving user uploads needs:

- ``X-Content-Type-Options: nosniff``: a browser renders a file as the type it is
  served as, never as what its bytes look like;
- media files of types that run code when opened (HTML, SVG, XML) carry
  ``Content-Security-Policy: sandbox``: an uploaded page or image opened from the
  site runs no script and gets no access to the site's cookies (no stored XSS),
  while ``<img src=...svg>`` still shows;
- names starting with a dot (``.env``, ``.git/``) are not served, and a missing
  file, a folder, a path outside the root and a path with a NUL are all the same
  404: the answer says nothing about what exists.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import tornado.web

from hurricane.http.handlers import BodilessApplication, HurricaneHandler, bodiless_application

logger = logging.getLogger("hurricane.server.general")

FILE_METHODS = frozenset({"GET", "HEAD"})
# Types a browser runs scripts in when the file is opened as a page.
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
    }
)


def is_active_type(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type in ACTIVE_TYPES or media_type.endswith("+xml")


def names_hidden_file(path: str) -> bool:
    """Whether a path relative to the root goes through a name starting with a dot."""
    return any(part.startswith(".") for part in re.split(r"[\\/]", path))


class FileHandler(HurricaneHandler, tornado.web.StaticFileHandler):
    """Tornado's file handler with the protections above."""

    sandbox_active_types = False

    def initialize(self, path: str, sandbox_active_types: bool = False) -> None:  # type: ignore[override]
        super().initialize(path)
        self.sandbox_active_types = sandbox_active_types

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")

    def parse_url_path(self, url_path: str) -> str:
        if "\x00" in url_path or names_hidden_file(url_path):
            raise tornado.web.HTTPError(404)
        return super().parse_url_path(url_path)

    async def get(self, path: str, include_body: bool = True) -> None:
        try:
            await super().get(path, include_body)
        except tornado.web.HTTPError as error:
            # Outside the root, a folder, not a regular file: all answered as missing,
            # before a byte of the response is written.
            if error.status_code == 403:
                raise tornado.web.HTTPError(404) from None
            raise

    def set_extra_headers(self, path: str) -> None:
        if self.sandbox_active_types and is_active_type(self.get_content_type()):
            self.set_header("Content-Security-Policy", "sandbox")


def make_file_application(
    options: Any, log_function: Any
) -> tuple[BodilessApplication | None, tuple[str, ...]]:
    """The application serving STATIC_ROOT and MEDIA_ROOT, when asked for, and the URL
    prefixes it answers."""
    from django.conf import settings

    handlers: list[Any] = []
    prefixes: list[str] = []

    def add(url: str | None, root: str | None, setting: str, user_uploads: bool) -> None:
        what = "media" if user_uploads else "static"
        if not url or "://" in url:
            url_setting = setting.replace("_ROOT", "_URL")
            logger.warning("Not serving %s: %s is not a local path", setting, url_setting)
            return
        prefix = "/" + url.strip("/") + "/"
        if not root:
            # django-hurricane 1.6 served the working directory here (the project's
            # code, settings and SQLite file); its start-up line's words stay, as
            # scripts wait for them.
            logger.warning("Serving %s files under %s is off: %s is not set", what, prefix, setting)
            return
        logger.info("Serving %s files under %s from %s", what, prefix, root)
        arguments = {"path": str(root), "sandbox_active_types": user_uploads}
        handlers.append((re.escape(prefix) + "(.*)", FileHandler, arguments))
        prefixes.append(prefix)

    if options.static and settings.DEBUG and staticfiles_installed():
        # Django's application serves them (runserver's way, hurricane.serve.server).
        logger.info(
            "Serving static files under %s through the finders (DEBUG)", settings.STATIC_URL
        )
    elif options.static:
        add(settings.STATIC_URL, settings.STATIC_ROOT, "STATIC_ROOT", user_uploads=False)
    if options.media:
        add(settings.MEDIA_URL, settings.MEDIA_ROOT, "MEDIA_ROOT", user_uploads=True)
    if not handlers:
        return None, ()
    application = bodiless_application(handlers, FILE_METHODS, options.debug, log_function)
    return application, tuple(prefixes)


def staticfiles_installed() -> bool:
    from django.apps import apps

    return apps.is_installed("django.contrib.staticfiles")
