"""The probe server: startup, readiness and liveness for Kubernetes, and /metrics.

Checks (Django system checks, the database) run on a thread of their own, never
on the event loop and never in the worker pool, so a busy pool cannot make the
probes lie or time out. Concurrent probes of one kind share one running check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import tornado.web
from django.conf import settings

from hurricane.config.options import Options
from hurricane.django.databases import bound_connection_waits, read_only_sqlite_hint
from hurricane.django.pool import WorkerPool
from hurricane.http.handlers import (
    IGNORED_BODY_LIMIT,
    BodilessApplication,
    HurricaneHandler,
    bodiless_application,
)
from hurricane.http.server import ConnectionLimits, GuardedHTTPServer, log_tornado_request
from hurricane.metrics.requests import RequestQueueLengthMetric, ResponseTimeAverageMetric
from hurricane.platform.listening import bind_probe_port, urls_of

if TYPE_CHECKING:
    from hurricane.platform.state import ProbeState

logger = logging.getLogger("hurricane.probes")

# A check that has not answered within this many seconds counts as failed (the
# kubelet's own default timeout is 1 s; a hung database must not hang the probe).
CHECK_TIMEOUT = 5.0
# The probes take GET (the kubelet), HEAD and POST (django-hurricane 1.6 answered
# it), never with a body: see hurricane.http.handlers.
PROBE_METHODS = frozenset({"GET", "HEAD", "POST"})
# Backstops below the body policy: Tornado itself reads no more than the body the
# policy tolerates on the probe port, and buffers little per connection.
PROBE_MAX_BODY_SIZE = IGNORED_BODY_LIMIT
PROBE_MAX_BUFFER_SIZE = 1024 * 1024
# The original library's phrase for failing Django system checks.
CHECK_ERROR = "django check error"


@dataclass(frozen=True)
class Problem:
    """Why a probe fails. ``reason`` is what the probe answers: anyone who reaches the
    probe port reads it. ``detail`` is added only in the log and the webhooks: a
    database's own error names its users, hosts and databases."""

    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def check_problems(tags: list[str]) -> list[Problem]:
    """Serious messages of the Django system checks with these tags: the project's
    own words, answered after the original library's phrase."""
    from django.core.checks import run_checks

    messages = run_checks(tags=tags, include_deployment_checks=True)
    return [
        Problem(f"{CHECK_ERROR}: {message}")
        for message in messages
        if message.is_serious() and not message.is_silenced()
    ]


def raised_problem(kind: str, error: Exception) -> Problem:
    """What a check that raised answers: the original library's phrase for a database
    error or a SystemCheckError; the error's own text, which for a database names its
    users and hosts, only in the log and the webhooks."""
    from django.core.management.base import SystemCheckError
    from django.db import Error as DatabaseError

    if isinstance(error, DatabaseError):
        return Problem("database error", str(error))
    if isinstance(error, SystemCheckError):
        return Problem(CHECK_ERROR, str(error))
    return Problem(f"{kind} checks raised {error.__class__.__name__}", str(error))


def liveness_errors() -> list[Problem]:
    """The problems of the checks tagged ``hurricane`` or ``liveness``."""
    return check_problems(["hurricane", "liveness"])


def readiness_errors() -> list[Problem]:
    """The problems of the checks tagged ``readiness``, and of each database."""
    from django.db import connections

    problems = check_problems(["readiness"])
    for alias in connections:
        error = database_error(connections[alias])
        if error is not None:
            detail = str(error).strip()
            hint = read_only_sqlite_hint(connections[alias], error)
            problems.append(
                Problem(
                    f"database {alias!r} does not answer", f"{detail}; {hint}" if hint else detail
                )
            )
    return problems


def database_error(connection: Any) -> Exception | None:
    """None if the database answers ``SELECT 1`` on this thread's connection.

    The connection is kept from one check to the next (the probes' thread is the only
    one that uses it): opened per check, as Django does per request without
    CONN_MAX_AGE, 5,000 probes made 1,251 sessions, each a process forked by
    PostgreSQL. A kept connection that fails (the server restarted, or dropped it
    while idle) is tried once more afresh before the database counts as away."""
    bound_connection_waits(connection)
    kept = connection.connection is not None
    try:
        select_one(connection)
        return None
    except Exception as error:
        close_quietly(connection)
        if not kept:
            return error
    try:
        select_one(connection)
        return None
    except Exception as error:
        close_quietly(connection)
        return error


def select_one(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        pass


def _run_into(check: Callable[[], list[Problem]], future: concurrent.futures.Future) -> None:
    try:
        future.set_result(check())
    except BaseException as error:
        future.set_exception(error)


def probe_http_server(
    application: BodilessApplication, limits: ConnectionLimits
) -> GuardedHTTPServer:
    """The probe port's HTTP server (``serve``'s and ``consume``'s): the app's header
    size limit and timeouts, so that a slow or oversized client cannot hold it
    either, and no request body."""
    return GuardedHTTPServer(
        application,
        limits=limits,
        max_body_size=PROBE_MAX_BODY_SIZE,
        max_buffer_size=PROBE_MAX_BUFFER_SIZE,
    )


class ProbeServerThread:
    """The probe server, on an event loop of its own thread.

    On the app's loop, a probe waited behind every connection the loop was busy
    with: 124 ms at the 99th percentile while /plain was saturated (bench/). Here it
    waits for the GIL only. Probe handlers read the state the process's loop writes
    and record their answers in it (hurricane.platform.state says which thread
    writes what); checks still run on the check thread (ProbeChecks). ``serve`` and
    ``consume`` both start it through start_probe_server."""

    def __init__(
        self,
        application: BodilessApplication,
        sockets: list[socket.socket],
        limits: ConnectionLimits,
    ):
        self.sockets = sockets
        started = threading.Event()

        async def serve() -> None:
            server = probe_http_server(application, limits)
            server.add_sockets(sockets)
            started.set()
            await asyncio.Event().wait()  # until the process exits

        # A daemon thread: the process's exit is the app's loop's decision.
        self.thread = threading.Thread(
            target=asyncio.run, args=(serve(),), name="hurricane-probe-server", daemon=True
        )
        self.thread.start()
        started.wait()


@dataclass
class ProbeServer:
    """The probes of one process, as :func:`start_probe_server` left them."""

    #: The probe application; None with ``--no-probe``.
    application: BodilessApplication | None = None
    #: The paths it answers (the probes, and /metrics when metrics are on).
    paths: frozenset[str] = frozenset()
    #: Where it listens, and those sockets as the start-up log names them; none when
    #: it answers on the app port (or not at all).
    sockets: list[socket.socket] = field(default_factory=list)
    urls: str = ""
    thread: ProbeServerThread | None = None


def start_probe_server(
    state: ProbeState,
    options: Options,
    port: int,
    limits: ConnectionLimits,
    inherited: dict[int, list[socket.socket]] | None = None,
    on_app_port: bool = False,
) -> ProbeServer:
    """The probes of ``serve`` and ``consume``: nothing with ``--no-probe``; the
    application and its paths for the app port's router to answer (``on_app_port``);
    else the probe server on ``port`` (``--interface``; a socket handed on by an
    in-place restart when ``inherited`` has one), on a thread of its own, with
    ``limits`` for its connections. A port that cannot be had raises StartupError.
    Logs nothing: each command says it in its own words."""
    if options.no_probe:
        return ProbeServer()
    application = make_probe_application(state, options)
    paths = probe_paths(options, state.metrics is not None)
    if on_app_port:
        return ProbeServer(application, paths)
    sockets = bind_probe_port(options, port, {} if inherited is None else inherited)
    thread = ProbeServerThread(application, sockets, limits)
    return ProbeServer(application, paths, sockets, urls_of(sockets), thread)


class ProbeChecks:
    """Runs check functions on a thread per kind; one run per kind at a time.

    A thread per kind: the readiness check's ``SELECT 1`` can hang for as long as
    TCP keeps a dead connection (a PgBouncer with no server connection to give waits
    120 s; a network partition on a kept connection, CONN_MAX_AGE, up to 15 min).
    Liveness checks queued behind it on one thread failed /alive after
    CHECK_TIMEOUT, and the kubelet restarted a pod that a restart cannot help."""

    def __init__(self) -> None:
        # Daemon threads: a check stuck on a hung database must not hold up exit.
        self.threads: dict[str, WorkerPool] = {}
        self.running: dict[str, asyncio.Future] = {}

    async def run(self, kind: str, check: Callable[[], list[Problem]]) -> list[Problem]:
        future = self.running.get(kind)
        if future is None or future.done():
            thread = self.threads.get(kind)
            if thread is None:
                thread = self.threads[kind] = WorkerPool(1, f"hurricane-probe-{kind}")
            result: concurrent.futures.Future[list[Problem]] = concurrent.futures.Future()
            thread.submit(_run_into, check, result)
            future = asyncio.wrap_future(result)
            self.running[kind] = future
        try:
            return await asyncio.wait_for(asyncio.shield(future), CHECK_TIMEOUT)
        except asyncio.TimeoutError:
            return [Problem(f"{kind} checks did not answer within {CHECK_TIMEOUT:g} s")]
        except Exception as error:
            logger.exception("The %s checks raised", kind)
            return [raised_problem(kind, error)]


class ProbeHandler(HurricaneHandler):
    """Common ground of the three probes: GET, HEAD and POST; never cached."""

    state: ProbeState

    def initialize(self, state: ProbeState) -> None:
        self.state = state

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=utf-8")

    def answer(self, code: int, text: str) -> None:
        self.set_status(code)
        if self.request.method != "HEAD":
            self.finish(text.rstrip("\n") + "\n")
        else:
            self.finish()

    async def probe(self) -> None:
        raise NotImplementedError

    async def get(self) -> None:
        await self.probe()

    async def head(self) -> None:
        await self.probe()

    async def post(self) -> None:
        await self.probe()

    def check_xsrf_cookie(self) -> None:  # probes accept POST from anything
        return None


class DjangoStartupHandler(ProbeHandler):
    async def probe(self) -> None:
        if self.state.started:
            self.answer(200, "started")
        else:
            self.answer(400, "starting")


class DjangoLivenessHandler(ProbeHandler):
    async def probe(self) -> None:
        state = self.state
        if state.max_lifetime and state.lifetime_used() > state.max_lifetime:
            state.report_liveness(False, ["max lifetime exceeded"])
            self.answer(400, f"max lifetime of {state.max_lifetime} {state.lifetime_unit} exceeded")
            return
        reason = state.not_alive_reason()
        if reason:
            state.report_liveness(False, [reason])
            self.answer(500, reason)
            return
        problems = await state.checks.run("liveness", liveness_errors)
        state.report_liveness(not problems, [str(problem) for problem in problems])
        if problems:
            self.answer(500, "\n".join(problem.reason for problem in problems))
        else:
            self.answer(200, alive_text())


class DjangoReadinessHandler(ProbeHandler):
    async def probe(self) -> None:
        state = self.state
        if state.draining:
            state.report_readiness(False, ["draining"])
            self.answer(503, "draining")
            return
        reason = state.not_ready_reason()
        if not state.started:
            self.answer(400, f"starting: {reason}" if reason else "starting")
            return
        if reason:
            state.report_readiness(False, [reason])
            self.answer(400, reason)
            return
        problems = await state.checks.run("readiness", readiness_errors)
        state.report_readiness(not problems, [str(problem) for problem in problems])
        if problems:
            self.answer(400, "\n".join(problem.reason for problem in problems))
        else:
            self.answer(200, "ready")


def alive_text() -> str:
    """The passing liveness answer, as the original library gave it: once an app request
    was answered, the mean response time and the requests waiting for a worker."""
    try:
        average = ResponseTimeAverageMetric.get()
        waiting = RequestQueueLengthMetric.get()
    except KeyError:  # the project unregistered them
        return "alive"
    if not average:
        return "alive"
    return f"Average response time: {average:.2f}ms Request queue size: {waiting} Rx"


# The original library's name for the probe handlers' base class.
DjangoProbeHandler = ProbeHandler


class MetricsHandler(HurricaneHandler):
    def initialize(self, metrics: Any) -> None:
        self.metrics = metrics

    async def get(self) -> None:
        from hurricane.metrics.exposition import CONTENT_TYPE, read_before_scrape

        awaited = await read_before_scrape(CHECK_TIMEOUT)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.metrics.render(awaited))

    head = get


def _path_pattern(path: str) -> str:
    # Both /ready and /ready/ answer.
    return re.escape(path) + "/?"


def log_probe_request(handler: tornado.web.RequestHandler) -> None:
    if getattr(settings, "LOG_PROBES", False):
        log_tornado_request(handler)


def make_probe_application(state: ProbeState, options: Options) -> BodilessApplication:
    handlers: list[Any] = [
        (_path_pattern(options.startup_probe), DjangoStartupHandler, {"state": state}),
        (_path_pattern(options.readiness_probe), DjangoReadinessHandler, {"state": state}),
        (_path_pattern(options.liveness_probe), DjangoLivenessHandler, {"state": state}),
    ]
    if state.metrics is not None:
        handlers.append(
            (_path_pattern(options.metrics), MetricsHandler, {"metrics": state.metrics})
        )
    return bodiless_application(handlers, PROBE_METHODS, options.debug, log_probe_request)


def probe_paths(options: Options, with_metrics: bool) -> frozenset[str]:
    paths = {options.startup_probe, options.readiness_probe, options.liveness_probe}
    if with_metrics:
        paths.add(options.metrics)
    return frozenset(paths)
