"""Prometheus exposition, written with prometheus_client.

The endpoint shows, in one scrape:

- Hurricane's HTTP metrics under conventional names (:class:`HttpMetrics`);
- the original library's families (``request_counter``, ``path_requests``,
  ``response_time_seconds``, ``response_size_bytes``, ``response_time_average``,
  ``request_queue_length``, ``hurricane_info``), from the ``prometheus`` instruments
  of :mod:`hurricane.metrics.requests`;
- the documented metrics of :mod:`hurricane.metrics.registry` without an instrument of
  their own, built-in and custom, under their ``code``;
- whatever the project registered in prometheus_client's default registry, which
  also holds the process, platform and garbage-collector metrics.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import math
import platform
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import django
import tornado
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

import hurricane
from hurricane.config.options import probe_port_of
from hurricane.metrics.registry import registry as metrics_registry
from hurricane.metrics.requests import (
    InfoMetrics,
    PathCounterMetric,
    RequestCounterMetric,
    RequestQueueLengthMetric,
    ResponseSizeMetric,
    ResponseTimeAverageMetric,
    ResponseTimeMetric,
)

logger = logging.getLogger("hurricane.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Any other method a client invents is counted as "other": labels must stay bounded.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
UNMATCHED = "unmatched"


@functools.lru_cache(maxsize=4096)
def route_of(path_info: str) -> str:
    """The URL pattern Django matches for a path (``api/items/<int:pk>/``), or
    ``unmatched``; ``/`` for the empty root pattern. Cached: the lookup runs once
    per distinct path, in the worker thread, off the event loop."""
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path_info)
    except Resolver404:
        return UNMATCHED
    except Exception:  # a broken URLconf answers 500 anyway; keep the label bounded
        return UNMATCHED
    return match.route or "/"


def path_label(route: str) -> str:
    """The ``path`` label of ``path_requests``: the matched pattern as a path, which for
    a pattern without converters is the path itself (``/orders/``)."""
    if route == "/" or route == UNMATCHED:
        return route
    return "/" + route


class StoredMetricsCollector:
    """Exports the metrics of the documented registry (built-in and custom) that have
    no prometheus_client instrument of their own: those export themselves from the
    default registry, and a second family of the same name would fail the scrape."""

    def __init__(self) -> None:
        # The values of the async metrics, awaited before the scrape (read_before_scrape).
        self.awaited: dict[str, Any] = {}

    def collect(self) -> Iterator:
        for code, metric in list(metrics_registry.metrics.items()):
            if getattr(metric, "prometheus", None) is not None:
                continue
            value = self.value_of(code, metric)
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, (int, float)):
                continue
            description = getattr(metric, "description", "") or code
            if getattr(metric, "prometheus_type", "gauge") == "counter":
                yield CounterMetricFamily(code, description, value=value)
            else:
                yield GaugeMetricFamily(code, description, value=value)

    def value_of(self, code: str, metric: Any) -> Any:
        if getattr(metric, "is_async", False):
            return self.awaited.get(code)
        if not hasattr(metric, "get_value"):
            return getattr(metric, "value", None)
        try:
            return metric.get()
        except Exception as error:
            logger.warning("The metric %s was left out: reading it raised %r", code, error)
            return None


async def read_before_scrape(timeout: float) -> dict[str, Any]:
    """Read the documented metrics that are computed when read, as the original library
    did before each scrape: a calculated metric may set its ``prometheus`` instrument
    as it is read, and an async one is awaited (for ``timeout`` seconds at most: a
    metric that hangs must not hold the scrape). Returns the async metrics' values."""
    awaited: dict[str, Any] = {}
    pending = {}
    for code, metric in list(metrics_registry.metrics.items()):
        is_async = getattr(metric, "is_async", False)
        if not is_async and (
            getattr(metric, "prometheus", None) is None or not hasattr(metric, "get_value")
        ):
            continue
        try:
            if is_async:
                pending[code] = asyncio.ensure_future(metric.get())
            else:
                metric.get()
        except Exception as error:
            logger.warning("Reading the metric %s raised %r", code, error)
    if pending:
        _, late = await asyncio.wait(pending.values(), timeout=timeout)
        for code, future in pending.items():
            if future in late:
                future.cancel()
                logger.warning("The metric %s did not answer within %g s", code, timeout)
            elif future.exception() is not None:
                logger.warning("Reading the metric %s raised %r", code, future.exception())
            else:
                awaited[code] = future.result()
    return awaited


class DefaultRegistryCollector:
    """prometheus_client's default registry: process metrics and the project's own."""

    def collect(self) -> Iterable:
        return REGISTRY.collect()


class InstrumentCollector:
    """One prometheus_client instrument, for a registry that leaves the default out."""

    def __init__(self, instrument: Any) -> None:
        self.instrument = instrument

    def collect(self) -> Iterable:
        return self.instrument.collect()


class ProcessMetrics:
    """What every Hurricane process exposes, in a registry of its own (so several
    servers can live in one process, e.g. in tests): the start-up time, the info
    metric, the documented registry and prometheus_client's default registry."""

    startup_help = "Seconds from the start of the process until it served."
    # Whether hurricane_info tells how the process serves HTTP (ports, files, commands).
    serves_http = False

    def __init__(self, include_default_registry: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.startup = Gauge(
            "hurricane_startup_duration_seconds", self.startup_help, registry=self.registry
        )
        self.info = {
            "version": hurricane.__version__,
            "django": django.get_version(),
            "tornado": tornado.version,
            "python": platform.python_version(),
        }
        show_info(self.info)
        self.stored = StoredMetricsCollector()
        self.registry.register(self.stored)
        if include_default_registry:
            self.registry.register(DefaultRegistryCollector())
        else:
            self.registry.register(InstrumentCollector(InfoMetrics.prometheus))

    def gauge_of(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time, never set on the request path."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def mark_started(self, seconds: float, options: Any) -> None:
        self.startup.set(seconds)
        if self.serves_http:
            self.info.update(serving_info(options, seconds))
            show_info(self.info)

    def render(self, awaited: dict[str, Any] | None = None) -> bytes:
        """The exposition; ``awaited``: the async metrics' values (read_before_scrape)."""
        self.stored.awaited = awaited or {}
        return generate_latest(self.registry)


def show_info(labels: dict[str, str]) -> None:
    try:
        InfoMetrics.set(dict(labels))
    except KeyError:  # the project unregistered it: the family stays
        InfoMetrics.prometheus.info(dict(labels))


def serving_info(options: Any, seconds: float) -> dict[str, str]:
    """The original library's labels of ``hurricane_info`` for ``serve``. Of the
    management commands run before serving, only their names: their arguments may
    hold secrets, and the probe port answers anyone who reaches it."""
    return {
        "server_port": str(options.port),
        "probe_port": str(probe_port_of(options)),
        "serve_static": "true" if options.static else "false",
        "serve_media": "true" if options.media else "false",
        "commands": ",".join(command[0] for command in options.command or () if command),
        "startup_time_seconds": str(round(seconds, 5)),
    }


class HttpRequestMetrics:
    """The per-request instruments: Hurricane's, labelled with the matched URL pattern,
    and the original library's (hurricane.metrics.requests). With ``--processes``,
    each serving process keeps them in prometheus_client's multiprocess files and only
    the supervisor's registry (:class:`SupervisorMetrics`) shows them, added up."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "hurricane_http_requests",
            "App requests answered, by method, status and matched URL pattern.",
            ["method", "status", "route"],
            registry=registry,
        )
        self.duration = Histogram(
            "hurricane_http_request_duration_seconds",
            "Time from the request's headers to the end of its response.",
            ["method", "route"],
            registry=registry,
        )
        self._children: dict[tuple[str, int, str], tuple[Any, Any, Any]] = {}

    def observe(self, method: str, status: int, route: str, seconds: float, size: int) -> None:
        """One app request answered: ``size`` bytes of body sent in ``seconds``."""
        if method not in KNOWN_METHODS:
            method = "other"
        # labels() checks, converts and looks up under a lock on every call; the
        # children are looked up once per label combination (as bounded as the labels:
        # known methods, the project's statuses and URL patterns).
        key = (method, status, route)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, str(status), route),
                self.duration.labels(method, route),
                PathCounterMetric.prometheus.labels(method, path_label(route)),
            )
        children[0].inc()
        children[1].observe(seconds)
        children[2].inc()
        RequestCounterMetric.increment()
        ResponseTimeAverageMetric.add_value(seconds * 1000.0)
        # Their instruments only: the stored values of these (a total, the last
        # observation) repeat what request_counter holds or mean nothing.
        ResponseTimeMetric.prometheus.observe(seconds)
        ResponseSizeMetric.prometheus.observe(size)


class WebSocketMetrics:
    """The WebSocket connections of the app port (ASGI projects): how many are open,
    the messages each way, and the closes by code (1000 normal, 1001 going away on a
    drain, 1006 dropped without a close, 1009 too big, ...). With ``--processes``,
    kept in prometheus_client's multiprocess files like the request counters; the
    open connections add up over the live processes."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.open = Gauge(
            "hurricane_websocket_connections_open",
            "WebSocket connections open (handshake done, not closed yet).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.messages = Counter(
            "hurricane_websocket_messages",
            "WebSocket messages, by direction: in from clients, out to them.",
            ["direction"],
            registry=registry,
        )
        self.closes = Counter(
            "hurricane_websocket_closes",
            "WebSocket connections closed, by close code (the client's, else the server's).",
            ["code"],
            registry=registry,
        )
        self._in = self.messages.labels("in")
        self._out = self.messages.labels("out")
        # Messages are counted in plain integers on the loop and added to the
        # counters by flush(), every FLUSH_INTERVAL: a counter's inc() takes a lock,
        # 7% of the loop's samples on an echo at 1,000 clients (py-spy).
        self.pending_in = 0
        self.pending_out = 0

    FLUSH_INTERVAL = 1.0

    def opened(self) -> None:
        self.open.inc()

    def flush(self) -> None:
        """Add the messages counted since the last flush (on the loop)."""
        if self.pending_in:
            pending, self.pending_in = self.pending_in, 0
            self._in.inc(pending)
        if self.pending_out:
            pending, self.pending_out = self.pending_out, 0
            self._out.inc(pending)

    def closed(self, code: int) -> None:
        self.flush()
        self.open.dec()
        self.closes.labels(str(code)).inc()


class ServingProcessMetrics(HttpRequestMetrics):
    """A serving process's of ``--processes``: the request and WebSocket instruments,
    in prometheus_client's multiprocess files only (no registry, no endpoint)."""

    def __init__(self) -> None:
        super().__init__(registry=None)
        self.websockets = WebSocketMetrics(registry=None)


IN_FLIGHT_HELP = "Requests on the app port being read, waiting, run or written."
BACKLOG_HELP = "App requests waiting for a free worker thread."
THREADS_HELP = (
    "Worker threads in the pool now (from --workers up to --max-workers, growing while "
    "they wait rather than compute)."
)
BUSY_HELP = (
    "Worker threads running a request now; over hurricane_http_worker_threads, the "
    "pool's busy share."
)


def pool_gauges(
    metrics: ProcessMetrics, threads: Callable[[], float], busy: Callable[[], float]
) -> None:
    metrics.gauge_of("hurricane_http_worker_threads", THREADS_HELP, threads)
    metrics.gauge_of("hurricane_http_worker_threads_busy", BUSY_HELP, busy)


class HttpMetrics(ProcessMetrics, HttpRequestMetrics):
    """The app server's metrics, with conventional names and units."""

    serves_http = True
    startup_help = "Seconds from the start of serve until the app port listened."

    def __init__(
        self,
        backlog: Callable[[], float],
        in_flight: Callable[[], float],
        threads: Callable[[], float],
        busy: Callable[[], float],
    ) -> None:
        ProcessMetrics.__init__(self)
        HttpRequestMetrics.__init__(self, self.registry)
        self.gauge_of("hurricane_http_requests_in_flight", IN_FLIGHT_HELP, in_flight)
        self.gauge_of("hurricane_http_request_backlog", BACKLOG_HELP, backlog)
        pool_gauges(self, threads, busy)
        self.websockets = WebSocketMetrics(self.registry)


class ServingProcessesCollector:
    """The serving processes' metrics from prometheus_client's multiprocess files,
    added up, except the original library's two gauges, which do not add up (a mean
    and a queue length per process): those are worked out for the whole pod, the mean
    response time from the added-up ``response_time_seconds``."""

    def __init__(self, multiprocess_dir: str, backlog: Callable[[], float]) -> None:
        from prometheus_client import multiprocess

        self.files = multiprocess.MultiProcessCollector(None, path=multiprocess_dir)
        self.backlog = backlog

    def collect(self) -> Iterator:
        per_process = (ResponseTimeAverageMetric.code, RequestQueueLengthMetric.code)
        total = count = 0.0
        for family in self.files.collect():
            if family.name in per_process:
                continue
            if family.name == ResponseTimeMetric.code:
                for sample in family.samples:
                    if sample.name.endswith("_sum"):
                        total = sample.value
                    elif sample.name.endswith("_count"):
                        count = sample.value
            yield family
        yield GaugeMetricFamily(
            ResponseTimeAverageMetric.code,
            ResponseTimeAverageMetric.description,
            value=total * 1000.0 / count if count else 0.0,
        )
        yield GaugeMetricFamily(
            RequestQueueLengthMetric.code,
            RequestQueueLengthMetric.description,
            value=self.backlog(),
        )


class SupervisorMetrics(ProcessMetrics):
    """``serve --processes N``: the serving processes' request metrics added up from
    prometheus_client's multiprocess files, and gauges read from their shared slots.

    prometheus_client's default registry is left out: in the supervisor it holds the
    project's metrics at their import-time values, which would repeat (wrongly) the
    names the multiprocess files carry."""

    serves_http = True
    startup_help = "Seconds from the start of serve until every serving process served."

    def __init__(
        self,
        multiprocess_dir: str,
        backlog: Callable[[], float],
        in_flight: Callable[[], float],
        serving: Callable[[], float],
        threads: Callable[[], float],
        busy: Callable[[], float],
    ) -> None:
        super().__init__(include_default_registry=False)
        self.registry.register(ServingProcessesCollector(multiprocess_dir, backlog))
        self.gauge_of("hurricane_http_requests_in_flight", IN_FLIGHT_HELP, in_flight)
        self.gauge_of("hurricane_http_request_backlog", BACKLOG_HELP, backlog)
        pool_gauges(self, threads, busy)
        self.gauge_of(
            "hurricane_serving_processes", "Serving processes that answer requests.", serving
        )


class ConsumerMetrics(ProcessMetrics):
    """The AMQP consumer's metrics, with conventional names and units."""

    startup_help = "Seconds from the start of consume until it consumed."

    def __init__(
        self,
        backlog: Callable[[], float],
        connected: Callable[[], float],
        unsettled: Callable[[], float],
        queue_messages: Callable[[], float | None],
    ) -> None:
        super().__init__()

        def counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, documentation, labels, registry=self.registry)

        self.received = counter(
            "hurricane_amqp_messages_received", "Messages delivered by the broker."
        )
        self.acked = counter("hurricane_amqp_messages_acked", "Messages acknowledged.")
        self.rejected = counter(
            "hurricane_amqp_messages_rejected",
            "Messages rejected; requeued=true ones went back to the queue, the others "
            "were dead-lettered or dropped.",
            ("requeued",),
        )
        self.errors = counter("hurricane_amqp_handler_errors", "on_message calls that raised.")
        self.given_up = counter(
            "hurricane_amqp_messages_given_up",
            "Messages rejected for good (dead-lettered or dropped) by the consumer: "
            "reason=max_deliveries, max_message_size or handler_error.",
            ("reason",),
        )
        self.reconnects = counter(
            "hurricane_amqp_reconnects", "Connections opened again after a loss."
        )
        self.duration = Histogram(
            "hurricane_amqp_handler_duration_seconds",
            "Time on_message took per message.",
            registry=self.registry,
        )
        self.gauge_of(
            "hurricane_amqp_connected",
            "1 while connected to the broker and consuming, else 0.",
            connected,
        )
        self.gauge_of(
            "hurricane_amqp_message_backlog",
            "Messages received and waiting for the handler.",
            backlog,
        )
        self.gauge_of(
            "hurricane_amqp_messages_unsettled",
            "Messages the broker delivered to this consumer and that are not yet "
            "acknowledged or rejected: those prefetched and the one in hand.",
            unsettled,
        )
        self.registry.register(QueueDepthCollector(queue_messages))


class QueueDepthCollector:
    """``hurricane_amqp_queue_messages``: the messages ready in the consumed queue, as
    the broker last reported them; no sample while that is not known (not yet asked,
    or the broker did not answer), rather than a number that would mislead a scaler."""

    def __init__(self, read: Callable[[], float | None]) -> None:
        self.read = read

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "hurricane_amqp_queue_messages",
            "Messages ready in the consumed queue, as the broker last reported them "
            "(asked every few seconds); absent while not known.",
        )
        value = self.read()
        if value is not None:
            family.add_metric([], value)
        yield family


# Celery tasks run from milliseconds to many minutes: the default buckets stop at 10 s.
TASK_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class TaskTally:
    """A histogram's counts kept by one thread without a lock: one count per bucket
    of TASK_SECONDS_BUCKETS (and one above), and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(TASK_SECONDS_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # A value equal to a bound belongs to that bound's bucket ("le").
        self.counts[bisect.bisect_left(TASK_SECONDS_BUCKETS, seconds)] += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as the exposition wants them."""
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*TASK_SECONDS_BUCKETS, math.inf), list(self.counts), strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))
        return cumulative


class CeleryTaskCollector:
    """The per-task families of a Celery worker, from the counts of each task name's
    instruments (anything with ``name``, ``received``, ``started``, ``finished``
    {outcome: count}, ``run_time`` and ``wait_time`` TaskTally)."""

    def __init__(self, tasks: Callable[[], list[Any]]) -> None:
        self.tasks = tasks

    def collect(self) -> Any:
        received = CounterMetricFamily(
            "hurricane_celery_tasks_received",
            "Tasks the worker took from the broker, by task name.",
            labels=("task",),
        )
        started = CounterMetricFamily(
            "hurricane_celery_tasks_started",
            "Tasks a pool process began, by task name.",
            labels=("task",),
        )
        finished = CounterMetricFamily(
            "hurricane_celery_tasks_finished",
            "Tasks that ended, by task name and outcome: succeeded, failed, retried, "
            "rejected, ignored or revoked.",
            labels=("task", "outcome"),
        )
        run_time = HistogramMetricFamily(
            "hurricane_celery_task_run_seconds",
            "Time a task ran in the pool, by task name.",
            labels=("task",),
        )
        wait_time = HistogramMetricFamily(
            "hurricane_celery_task_wait_seconds",
            "Time from the worker receiving a task (or from its ETA, if later) until a "
            "pool process began it, by task name: prefetched tasks wait here.",
            labels=("task",),
        )
        for task in self.tasks():
            received.add_metric([task.name], task.received)
            started.add_metric([task.name], task.started)
            for outcome, count in list(task.finished.items()):
                finished.add_metric([task.name, outcome], count)
            for family, tally in ((run_time, task.run_time), (wait_time, task.wait_time)):
                family.add_metric([task.name], tally.buckets(), tally.sum)
        yield from (received, started, finished, run_time, wait_time)


class CeleryWorkerMetrics(ProcessMetrics):
    """A Celery worker's metrics (hurricane.celery), all recorded in the worker's main
    process: it sees every task come in, start and end, whatever the pool."""

    startup_help = "Seconds from the start of the worker until it consumed its queues."

    def __init__(
        self,
        connected: Callable[[], float],
        reserved: Callable[[], float],
        busy: Callable[[], float],
        idle: Callable[[], float],
        loop_age: Callable[[], float],
        tasks: Callable[[], list[Any]],
    ) -> None:
        super().__init__()
        # Counted per task in plain integers by the worker's main thread
        # (hurricane.celery.worker.TaskInstruments) and turned into families only
        # when scraped: prometheus_client's locked instruments cost the main loop
        # several times more per task.
        self.registry.register(CeleryTaskCollector(tasks))
        self.reconnects = Counter(
            "hurricane_celery_reconnects",
            "Times the worker consumed again after losing the broker.",
            registry=self.registry,
        )
        self.gauge_of(
            "hurricane_celery_connected",
            "1 while connected to the broker and consuming, else 0.",
            connected,
        )
        self.gauge_of(
            "hurricane_celery_tasks_reserved",
            "Tasks received (prefetched) and waiting for a pool process.",
            reserved,
        )
        self.gauge_of("hurricane_celery_pool_busy", "Pool processes running a task.", busy)
        self.gauge_of("hurricane_celery_pool_idle", "Pool processes without a task.", idle)
        self.gauge_of(
            "hurricane_celery_loop_heartbeat_age_seconds",
            "Seconds since the worker's consumer loop last beat (liveness fails past "
            "--celery-loop-timeout while connected).",
            loop_age,
        )


class CeleryBeatMetrics(ProcessMetrics):
    """Celery beat's metrics (hurricane.celery)."""

    startup_help = "Seconds from the start of beat until its scheduler first ticked."

    def __init__(self, connected: Callable[[], float], tick_age: Callable[[], float]) -> None:
        super().__init__()
        self.ticks = Counter(
            "hurricane_celery_beat_ticks",
            "Times the scheduler looked for due tasks.",
            registry=self.registry,
        )
        self.gauge_of(
            "hurricane_celery_beat_connected",
            "1 while beat's last look at the broker found it answering, else 0.",
            connected,
        )
        self.gauge_of(
            "hurricane_celery_beat_tick_age_seconds",
            "Seconds since the scheduler last ticked.",
            tick_age,
        )
