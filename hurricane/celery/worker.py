"""Hurricane's probes, webhooks and metrics in a Celery worker (``celery -A proj worker``).

- startup probe: 200 once the worker first consumes its queues;
- readiness: connected and consuming, fewer than ``--req-queue-len`` received tasks
  waiting for a pool process, the readiness checks and the databases; 503 once the
  worker shuts down (SIGTERM), with its webhook at once;
- liveness: the consumer loop beat within ``--celery-loop-timeout`` while
  connected, and the checks tagged ``hurricane``/``liveness``. While the broker is
  away Celery is busy connecting again, so the loop is not judged: a broker outage
  makes the worker unready, never unlive (restarting it would not bring the broker
  back).

Two bootsteps do it: one in the worker's blueprint (the probe server, started before
the consumer connects) and one in the consumer's (connected or not, and the loop's
heartbeat: a timer entry of the consumer's own timer, which the event loop fires).

Metrics are recorded in the worker's main process. It receives every task
(``task_received``) and, whatever the pool, runs the request's ``on_accepted``,
``on_success`` and ``on_failure`` callbacks: with prefork they come back from the
pool processes through the result pipes. Wrapping them on each request counts each
task once, without prometheus_client's multiprocess mode and its files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from celery import bootsteps, signals
from celery.exceptions import Ignore, Reject, Retry, Terminated, WorkerLostError

from hurricane.celery.common import (
    close_inherited_probe_sockets,
    load_options,
    start_probes,
    wait_for_last_webhook,
)
from hurricane.config.options import CeleryOptions
from hurricane.metrics.exposition import TaskTally
from hurricane.platform.state import ProbeState

logger = logging.getLogger("hurricane.celery")

# How often the consumer loop beats. Small against --celery-loop-timeout (60 s by
# default); one timer entry a second costs the loop nothing measurable.
HEARTBEAT_INTERVAL = 1.0
OTHER_TASKS = "other"


def waiting_tasks() -> int:
    """Tasks received (prefetched) that no pool process has begun. Celery's own
    bookkeeping of this process: ``reserved_requests`` holds the active ones too."""
    from celery.worker import state

    return max(0, len(state.reserved_requests) - len(state.active_requests))


def active_tasks() -> int:
    from celery.worker import state

    return len(state.active_requests)


class TaskInstruments:
    """The counts of one task name, kept by the worker's main thread in plain
    integers; hurricane.metrics.exposition.CeleryTaskCollector reads them when
    scraped."""

    __slots__ = ("name", "received", "started", "finished", "run_time", "wait_time")

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0
        self.started = 0
        self.finished: dict[str, int] = {}
        self.run_time = TaskTally()
        self.wait_time = TaskTally()

    def finish(self, outcome: str) -> None:
        self.finished[outcome] = self.finished.get(outcome, 0) + 1


class WorkerState(ProbeState):
    """What the probes and metrics of a Celery worker report. The worker's main
    thread writes ``connected``, ``loop_beat`` and ``tasks_handled`` (each by one
    assignment); the probe server's thread reads them."""

    lifetime_unit = "tasks"

    def __init__(self, options: CeleryOptions, began: float, pool_size: Callable[[], int]) -> None:
        super().__init__(options)
        self.began = began
        self.pool_size = pool_size
        self.loop_timeout = options.celery_loop_timeout
        self.label_limit = options.celery_task_labels
        self.connected = False
        self.loop_beat: float | None = None
        self.tasks_handled = 0
        self.instruments: dict[str, TaskInstruments] = {}
        self.worker_metrics: Any = None
        if self.metrics_enabled:
            from hurricane.metrics.exposition import CeleryWorkerMetrics

            self.worker_metrics = self.metrics = CeleryWorkerMetrics(
                connected=lambda: int(self.connected),
                reserved=waiting_tasks,
                busy=active_tasks,
                idle=lambda: max(0, self.pool_size() - active_tasks()),
                loop_age=self.loop_age,
                tasks=lambda: list(self.instruments.values()),
            )

    def lifetime_used(self) -> int:
        return self.tasks_handled

    def loop_age(self) -> float:
        return 0.0 if self.loop_beat is None else time.monotonic() - self.loop_beat

    def not_ready_reason(self) -> str | None:
        if not self.connected:
            return "not connected to the broker"
        waiting = waiting_tasks()
        if waiting >= self.req_queue_len:
            return f"{waiting} tasks wait for a pool process (limit {self.req_queue_len})"
        return None

    def not_alive_reason(self) -> str | None:
        # Judged only while connected: while the broker is away, Celery's connection
        # retries hold the loop, and that is not the worker's fault.
        if not self.connected or self.loop_beat is None:
            return None
        age = time.monotonic() - self.loop_beat
        if age > self.loop_timeout:
            return (
                f"the worker's consumer loop made no progress for {age:.0f} s "
                f"(limit {self.loop_timeout:g} s)"
            )
        return None

    # -- the consumer's bootstep ------------------------------------------------------------

    def beat(self) -> None:
        self.loop_beat = time.monotonic()

    def consuming(self) -> None:
        self.beat()
        self.connected = True
        if not self.started:
            self.mark_started(time.monotonic() - self.began)
        else:
            if self.worker_metrics is not None:
                self.worker_metrics.reconnects.inc()
            logger.info("Consuming again after losing the broker")

    def stopped_consuming(self, shutting_down: bool) -> None:
        was_connected, self.connected = self.connected, False
        if was_connected and not shutting_down and self.started:
            # Tell the operators now, not at the next readiness probe.
            self.report_readiness(False, ["not connected to the broker"])

    # -- tasks, in the worker's main process ------------------------------------------------

    def instruments_of(self, name: str) -> TaskInstruments:
        instruments = self.instruments.get(name)
        if instruments is None:
            # Task names come from the messages: past the limit, one label for the
            # rest, so that a flood of names cannot grow the exposition without end.
            if len(self.instruments) >= self.label_limit:
                label = OTHER_TASKS
                instruments = self.instruments.get(OTHER_TASKS)
                if instruments is None:
                    instruments = TaskInstruments(label)
                    self.instruments[OTHER_TASKS] = instruments
                return instruments
            instruments = self.instruments[name] = TaskInstruments(name)
        return instruments

    def task_received(self, request: Any) -> None:
        """Count the task, and wrap this request's callbacks to see it start and end."""
        if self.worker_metrics is None:
            request.on_success = self._counting_success(request)
            request.on_failure = self._counting_failure(request)
            return
        instruments = self.instruments_of(request.name)
        instruments.received += 1
        received = time.time()
        eta = request.eta
        if eta is not None:
            received = max(received, eta.timestamp())
        accepted_at: list[float] = []
        on_accepted = request.on_accepted
        on_success = request.on_success
        on_failure = request.on_failure

        def accepted(pid: Any, time_accepted: float) -> Any:
            # time_accepted: the pool process's monotonic clock, the same clock as ours.
            accepted_at.append(time_accepted)
            instruments.started += 1
            began = time.time() - (time.monotonic() - time_accepted)
            instruments.wait_time.observe(max(0.0, began - received))
            return on_accepted(pid, time_accepted)

        def succeeded(failed__retval__runtime: Any, **kwargs: Any) -> Any:
            failed, _, runtime = failed__retval__runtime
            if not failed:
                # A failure goes on to on_failure (wrapped below) and is counted there.
                self.tasks_handled += 1
                instruments.finish("succeeded")
                instruments.run_time.observe(runtime)
                unwrap(request)
            return on_success(failed__retval__runtime, **kwargs)

        def failed(exc_info: Any, *args: Any, **kwargs: Any) -> Any:
            self.tasks_handled += 1
            instruments.finish(failure_outcome(exc_info))
            if accepted_at:
                instruments.run_time.observe(max(0.0, time.monotonic() - accepted_at[0]))
            unwrap(request)
            return on_failure(exc_info, *args, **kwargs)

        request.on_accepted = accepted
        request.on_success = succeeded
        request.on_failure = failed

    def _counting_success(self, request: Any) -> Callable[..., Any]:
        # Without metrics, --max-lifetime still counts the tasks handled.
        on_success = request.on_success

        def succeeded(failed__retval__runtime: Any, **kwargs: Any) -> Any:
            if not failed__retval__runtime[0]:
                self.tasks_handled += 1
                unwrap(request)
            return on_success(failed__retval__runtime, **kwargs)

        return succeeded

    def _counting_failure(self, request: Any) -> Callable[..., Any]:
        on_failure = request.on_failure

        def failed(exc_info: Any, *args: Any, **kwargs: Any) -> Any:
            self.tasks_handled += 1
            unwrap(request)
            return on_failure(exc_info, *args, **kwargs)

        return failed


def unwrap(request: Any) -> None:
    """Take a finished request's callbacks back to its class's. A wrapper holds the
    request's own bound method, so the request held itself through its wrappers: a
    reference cycle per task, freed only by the garbage collector's passes, whose
    cost grew with every task waiting for them."""
    attributes = vars(request)
    for name in WRAPPED_CALLBACKS:
        attributes.pop(name, None)


# The callbacks of a request (celery.worker.request.Request) that the main process
# runs when the pool reports a task begun and ended, wrapped per request.
WRAPPED_CALLBACKS = ("on_accepted", "on_success", "on_failure")


def failure_outcome(exc_info: Any) -> str:
    """The ``outcome`` label of a task that ended through ``on_failure``."""
    error = getattr(exc_info, "exception", None)
    if isinstance(error, ExceptionWithTraceback):  # as it came back from a pool process
        error = error.exc
    if isinstance(error, Retry):
        return "retried"
    if isinstance(error, Ignore):
        return "ignored"
    if isinstance(error, Reject):
        return "rejected"
    if isinstance(error, Terminated):
        return "revoked"
    if isinstance(error, (WorkerLostError, SystemExit, KeyboardInterrupt)):
        return "lost"
    return "failed"


def pool_size_of(worker: Any) -> Callable[[], int]:
    """The pool's current size (it changes with --autoscale)."""

    def size() -> int:
        pool = getattr(worker, "pool", None)
        size = getattr(pool, "num_processes", None) if pool is not None else None
        return int(size) if isinstance(size, int) else int(worker.concurrency or 0)

    return size


class HurricaneWorkerStep(bootsteps.StartStopStep):
    """The worker's part: the options, the state and the probe server, started before
    the consumer connects (the consumer's step comes last in Celery's blueprint)."""

    label = "Hurricane probes"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.began = time.monotonic()
        self.options = load_options()
        self.state = WorkerState(self.options, self.began, pool_size_of(worker))
        worker.hurricane_state = self.state
        _states[worker.hostname] = self.state

    def create(self, worker: Any) -> HurricaneWorkerStep:
        return self

    def start(self, worker: Any) -> None:
        start_probes(self.state, self.options, "worker")

    def stop(self, worker: Any) -> None:
        # Reached on warm and cold shutdown alike, after the pool finished (or dropped)
        # its tasks: the draining webhook may still be on its way.
        wait_for_last_webhook(self.state, "draining")


class HurricaneConsumerStep(bootsteps.StartStopStep):
    """The consumer's part: started once the task consumer consumes, stopped when
    the connection is lost (the consumer's blueprint restarts) or at shutdown."""

    label = "Hurricane heartbeat"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self.timer_entry: Any = None

    def create(self, consumer: Any) -> HurricaneConsumerStep:
        return self

    def start(self, consumer: Any) -> None:
        state: WorkerState | None = getattr(consumer.controller, "hurricane_state", None)
        if state is None:
            return
        self.cancel_timer()
        # The consumer's timer: with an event loop (the default for AMQP and Redis) the
        # loop fires it, so a loop that hangs stops the beats.
        self.timer_entry = consumer.timer.call_repeatedly(HEARTBEAT_INTERVAL, state.beat)
        state.consuming()

    def stop(self, consumer: Any) -> None:
        self.cancel_timer()
        state: WorkerState | None = getattr(consumer.controller, "hurricane_state", None)
        if state is not None:
            from celery.worker import state as worker_state

            shutting_down = bool(worker_state.should_stop or worker_state.should_terminate)
            state.stopped_consuming(shutting_down or state.draining)

    shutdown = stop

    def cancel_timer(self) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None


# The worker state of each worker in this process, by host name: Celery's shutdown
# signal names the worker by its host name only.
_states: dict[str, WorkerState] = {}


def install_worker(app: Any) -> None:
    """Add the two bootsteps to ``app``'s worker and connect the signals they need."""
    if HurricaneWorkerStep in app.steps["worker"]:
        return
    app.steps["worker"].add(HurricaneWorkerStep)
    app.steps["consumer"].add(HurricaneConsumerStep)

    def on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
        controller = getattr(sender, "controller", None)
        state: WorkerState | None = getattr(controller, "hurricane_state", None)
        if state is not None and request is not None and sender.app is app:
            state.task_received(request)

    def on_shutting_down(sender: Any = None, **_: Any) -> None:
        # In Celery's SIGTERM/SIGINT handler: readiness fails now, with its webhook;
        # Celery's warm shutdown then lets the pool finish the tasks in hand.
        state = _states.get(sender) if isinstance(sender, str) else None
        if state is not None:
            logger.info("Shutting down: readiness fails, the tasks in hand finish")
            state.start_draining()

    # Strong references: the receivers are closures, held by nothing else.
    signals.task_received.connect(on_task_received, weak=False)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    signals.worker_process_init.connect(close_inherited_probe_sockets, weak=False)
