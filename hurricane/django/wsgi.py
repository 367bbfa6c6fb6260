"""The WSGI bridge: Django's WSGI handler run in a bounded pool of worker threads.

The event loop parses HTTP and builds the WSGI environ; a worker thread runs the
application and produces the body; the loop writes it. A response whose body is
known whole (every non-streaming ``HttpResponse``) crosses back to the loop once.
A streaming response is written chunk by chunk as the application produces it;
the worker waits until each chunk is handed to the socket, which bounds memory
and stops the work when the client goes away.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import SyncToAsync
from tornado import httputil
from tornado.iostream import StreamClosedError

from hurricane.django.pool import WorkerPool
from hurricane.http.body import Body, body_length, body_stream
from hurricane.http.exchange import ResponseSink

logger = logging.getLogger("hurricane.server.general")

# Seconds a worker waits for the loop to hand one streamed chunk to the socket
# before it gives up on a client that stopped reading.
STREAM_WRITE_TIMEOUT = 60.0


def build_environ(request: ResponseSink, body: Body) -> dict[str, Any]:
    """The PEP 3333 environ of one request."""
    start_line, headers = request.start_line, request.headers
    path, query = split_target(start_line.path)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": start_line.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "REMOTE_ADDR": request.remote_ip,
        "SERVER_NAME": server_name_of(headers),
        "SERVER_PORT": str(request.server_port),
        "SERVER_PROTOCOL": start_line.version,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": body_stream(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers.get_all():
        # Like wsgiref and gunicorn, drop names with underscores: "X_Forwarded_For"
        # would otherwise be indistinguishable from "X-Forwarded-For" in the environ.
        if "_" in name:
            continue
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if body and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(body_length(body))
    return environ


def split_target(target: str) -> tuple[str, str]:
    """The path and the query of a request target. HTTP/1.1 servers must accept the
    absolute form (``GET http://example.com/notes/?a=1``, what clients send to a
    forward proxy): its path is what follows the authority. The Host header still
    names the host, which Django checks against ALLOWED_HOSTS."""
    scheme, separator, rest = target.partition("://")
    if separator and scheme.lower() in ("http", "https") and "/" not in scheme:
        authority_end = min(
            (i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest)
        )
        target = rest[authority_end:]
        if not target.startswith("/"):
            target = "/" + target
    path, _, query = target.partition("?")
    return path, query


def server_name_of(headers: httputil.HTTPHeaders) -> str:
    """The host part of the Host header (``localhost`` without one)."""
    host = headers.get("Host", "")
    server_name = host.rsplit(":", 1)[0] if host and not host.endswith("]") else host
    return server_name or "localhost"


class LoopInbox:
    """Hands callbacks from worker threads to the event loop, many per wake-up.

    ``call_soon_threadsafe`` writes to the loop's self-pipe on every call: under load
    that syscall (and the GIL hand-over around it) was a fifth of the server's CPU
    time on /plain (py-spy). Here only the post that finds the inbox empty wakes the
    loop; the callbacks posted until the loop drains it ride along, in order.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: collections.deque = collections.deque()
        self._wake_pending = False

    def post(self, callback: Callable, *args: Any) -> None:
        with self._lock:
            self._items.append((callback, args))
            if not self._wake_pending:
                # Scheduled under the lock: a post that sees the flag set must find the
                # drain already ahead of anything its thread schedules next.
                self._wake_pending = True
                self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Swapped under the lock with the flag reset, so that a post made from now on
        # schedules a drain of its own: callbacks keep their order, also relative to
        # what a worker schedules on the loop directly after posting.
        with self._lock:
            items, self._items = self._items, collections.deque()
            self._wake_pending = False
        for callback, args in items:
            try:
                callback(*args)
            except Exception:
                logger.exception("Error in a callback from a worker thread")


def lend_loop_to_async_to_sync(loop: asyncio.AbstractEventLoop) -> None:
    """Make asgiref's ``async_to_sync`` in this thread run its coroutine on ``loop``,
    as it does in the threads of asgiref's own ``sync_to_async`` (the same thread
    locals, with the process id that keeps a forked child from using its parent's).
    Runs before every request of such a container: two attribute reads when set."""
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop", None) is not loop:
        local.main_event_loop = loop
        local.main_event_loop_pid = os.getpid()


class HurricaneWSGIContainer:
    """Runs a WSGI application for one request at a time per worker thread."""

    def __init__(
        self,
        wsgi_application: Callable,
        pool: WorkerPool,
        loop: asyncio.AbstractEventLoop,
        route_of: Callable[[str], str] | None = None,
        async_to_sync_on_loop: bool = False,
    ) -> None:
        self.wsgi_application = wsgi_application
        self.pool = pool
        self.loop = loop
        self.inbox = LoopInbox(loop)
        # Names the URL pattern a request matched, for the metrics' route label.
        self.route_of = route_of
        # On the ASGI path, sync views run here instead of in Django's sync_to_async
        # threads; asgiref's async_to_sync in them (Channels' group_send from a view)
        # must then reach the server's loop as it would from those threads, not start
        # a loop of its own per call: the channel layer's queues and connections
        # belong to the server's loop.
        self.async_to_sync_on_loop = async_to_sync_on_loop

    def serve(self, body: Body, sink: ResponseSink, watcher: Any = None) -> None:
        """Run the request in a worker thread. ``watcher`` (an async view's request,
        hurricane.django.asgi.PooledAsyncRequest) hears when the response streams and
        when the thread is done with it."""
        self.pool.submit(self._run, build_environ(sink, body), sink, watcher)

    def _run(self, environ: dict[str, Any], sink: ResponseSink, watcher: Any = None) -> None:
        if self.async_to_sync_on_loop:
            lend_loop_to_async_to_sync(self.loop)
        try:
            if not sink.client_gone:  # else it gave up while the request waited for a worker
                self._respond(environ, sink, watcher)
        finally:
            environ["wsgi.input"].close()  # a spooled body's file is freed now
            if watcher is not None:
                watcher.finished()

    def _respond(self, environ: dict[str, Any], sink: ResponseSink, watcher: Any = None) -> None:
        post = self.inbox.post
        response: dict[str, Any] = {}
        written: list[bytes] = []

        def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
            if exc_info and response.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            response["status"], response["headers"] = status, headers
            return written.append  # the legacy write() callable

        if self.route_of is not None:
            sink.route = self.route_of(environ["PATH_INFO"])
        try:
            result = self.wsgi_application(environ, start_response)
        except Exception:
            logger.exception("Error running the WSGI application")
            post(sink.fail)
            return
        try:
            if isinstance(result, (list, tuple)) or getattr(result, "streaming", None) is False:
                body = b"".join(written) + b"".join(result)
                _close(result)
                post(sink.send_whole, response["status"], response["headers"], body)
                return
            if watcher is not None:
                watcher.streaming()
            self._stream(result, response, written, sink)
        except Exception:
            logger.exception("Error producing the response body")
            _close(result)
            if response.get("sent"):
                post(sink.finish_stream)
            else:
                post(sink.fail)

    def _stream(
        self,
        result: Iterable[bytes],
        response: dict[str, Any],
        written: list[bytes],
        sink: ResponseSink,
    ) -> None:
        if self.async_to_sync_on_loop and getattr(result, "is_async", False):
            # An async view's StreamingHttpResponse over an async iterator: Django's
            # WSGI handler would gather it whole before the first byte (and never end
            # an endless one); here each chunk is taken from it on the loop, as the
            # ASGI path does, while it is written.
            result = AsyncChunks(result, self.loop)
        iterator = iter(result)
        try:
            first = next(iterator)
        except StopIteration:
            _close(result)
            self.inbox.post(
                sink.send_whole, response["status"], response["headers"], b"".join(written)
            )
            return
        self.inbox.post(sink.start_stream, response["status"], response["headers"])
        response["sent"] = True
        try:
            for chunk in _chain(written, first, iterator):
                if not chunk:
                    continue
                future = asyncio.run_coroutine_threadsafe(sink.write_chunk(chunk), self.loop)
                try:
                    future.result(STREAM_WRITE_TIMEOUT)
                except (StreamClosedError, concurrent.futures.TimeoutError):
                    future.cancel()
                    logger.info("Client went away during a streamed response")
                    break
        finally:
            _close(result)
        self.inbox.post(sink.finish_stream)


class AsyncChunks:
    """The chunks of a StreamingHttpResponse's async iterator, for a worker thread:
    each one produced on the event loop. ``close`` closes the iterator there (a
    client that went away stops the generator) and then the response."""

    def __init__(self, response: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.response = response
        self.loop = loop
        self.iterator = response.streaming_content.__aiter__()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            future = asyncio.run_coroutine_threadsafe(self.iterator.__anext__(), self.loop)
            try:
                yield future.result()
            except StopAsyncIteration:
                return

    def close(self) -> None:
        # streaming_content wraps the view's iterator; closing the wrapper does not
        # close what it wraps (an "async for" leaves its iterator open), so the view's
        # own generator (Django keeps it as _iterator) is closed too: a client that
        # went away stops it, as on the ASGI path.
        for iterator in (self.iterator, getattr(self.response, "_iterator", None)):
            aclose = getattr(iterator, "aclose", None)
            if aclose is None:
                continue
            try:
                asyncio.run_coroutine_threadsafe(aclose(), self.loop).result(STREAM_WRITE_TIMEOUT)
            except Exception:
                logger.exception("Error closing the streamed response's iterator")
        self.response.close()


def _chain(written: list[bytes], first: bytes, rest: Iterable[bytes]) -> Iterable[bytes]:
    yield from written
    yield first
    yield from rest


def _close(result: Any) -> None:
    # Django's response.close() sends request_finished, which closes this thread's
    # database connections: it must run here, in the worker that served the request.
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.exception("Error closing the WSGI response")
