"""Hurricane's own Tornado applications (the probes and ``/metrics``, the static and
media files): what their handlers share, and the body policy they all follow.

One body policy for every server Hurricane runs: the app takes a body up to
``--max-body-size`` (spooled to disk once large, see :mod:`hurricane.http.body`);
these applications take none (a few bytes are tolerated, see IGNORED_BODY_LIMIT).
Tornado reads a request's body whole into memory
before any handler runs, so a body sent to them used to be held in memory up to
Tornado's 100 MB limit: two 95 MB POSTs to ``/media/x`` or three to ``/metrics``
took a pod past its 512 MiB limit. Here such a request is answered from its headers.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from tornado import httputil

from hurricane.http.refusals import announced_length, refuse_and_close
from hurricane.http.response import closing_error_response, error_response

# A body up to this size is read and ignored, as by any handler that reads none:
# clients POST a little JSON to probes (django-hurricane 1.6's own test client sends
# "null"). A larger one, or one of unknown length (chunked), is refused unread.
IGNORED_BODY_LIMIT = 4096

#: What a refusal is: the status, a one-line message and any headers to add.
Refusal = tuple[int, str, tuple[tuple[str, str], ...]]


class HurricaneHandler(tornado.web.RequestHandler):
    """Base of Hurricane's own handlers: no ``Server: TornadoServer/x.y.z`` header,
    which tells a scanner which version's advisories to try."""

    def clear(self) -> None:
        super().clear()
        self.clear_header("Server")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A 404 or a 500 of these handlers, as the server's own errors look
        (:func:`~hurricane.http.response.error_response`), not Tornado's HTML page."""
        _, headers, body = error_response(status_code)  # "Not Found\n"
        for name, value in headers:
            self.set_header(name, value)
        self.finish(body)


class NotFoundHandler(HurricaneHandler):
    """What answers a path no handler matches (Tornado's own would name itself)."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class BodilessApplication(httputil.HTTPServerConnectionDelegate):
    """A Tornado application that takes no request body. A request that announces one
    larger than IGNORED_BODY_LIMIT (or of unknown length) is answered from its
    headers: 405 when the application does not take its method anyway, else 413;
    either way the connection closes.

    Used as the probe port's server delegate as it is; on the app port, the request
    router asks :meth:`refusal` itself before handing a request over, since it
    counts the requests it answers.
    """

    def __init__(self, application: tornado.web.Application, methods: frozenset[str]) -> None:
        self.application = application
        self.methods = methods
        self.allow = ", ".join(sorted(methods))

    def refusal(
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> Refusal | None:
        """How to refuse the request, or None to serve it."""
        length = announced_length(headers)
        if length is not None and length <= IGNORED_BODY_LIMIT:
            return None
        if start_line.method not in self.methods:
            return 405, "Method not allowed", (("Allow", self.allow),)
        return 413, "This URL takes no request body", ()

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _BodilessRequest(self, server_conn, request_conn)


class _BodilessRequest(httputil.HTTPMessageDelegate):
    def __init__(self, owner: BodilessApplication, server_conn: object, request_conn: Any) -> None:
        self.owner = owner
        self.server_conn = server_conn
        self.conn = request_conn
        self.inner: Any = None  # the application's delegate, once the request is taken

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        # Tornado's delegates are typed for both ends; a server's gets requests only.
        assert isinstance(start_line, httputil.RequestStartLine)
        refusal = self.owner.refusal(start_line, headers)
        if refusal is not None:
            refuse_and_close(self.conn, headers, closing_error_response(*refusal))
            return None
        self.inner = self.owner.application.start_request(self.server_conn, self.conn)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


def bodiless_application(
    handlers: list[Any], methods: frozenset[str], debug: bool, log_function: Any
) -> BodilessApplication:
    """A Tornado application of Hurricane's own handlers, which take no body."""
    application = tornado.web.Application(
        handlers,
        debug=debug,
        autoreload=False,
        log_function=log_function,
        default_handler_class=NotFoundHandler,
    )
    return BodilessApplication(application, methods)
