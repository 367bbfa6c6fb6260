"""Hurricane's probes, webhooks and metrics in Celery beat (``celery -A proj beat``).

- startup probe: 200 once the scheduler first ticked;
- liveness: the scheduler ticked within its max interval plus
  ``--celery-loop-timeout`` (beat sleeps at most its max interval between ticks),
  and the checks tagged ``hurricane``/``liveness``; never the broker;
- readiness: the broker answered at the last look (a thread looks every few
  seconds, on a connection of its own, so no probe waits for the broker), no other
  beat holds the lock, the readiness checks and the databases; on SIGTERM it fails
  ("draining", with its webhook) as beat stops sending tasks.

Two beats would send every periodic task twice. On RabbitMQ, each beat declares an
exclusive queue named after the app: the broker lets one connection hold it, so a
second beat is told, logs an ERROR and stays unready until the first is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import signals

from hurricane.celery.common import load_options, start_probes, wait_for_last_webhook
from hurricane.config.options import CeleryOptions
from hurricane.platform.state import ProbeState

logger = logging.getLogger("hurricane.celery")

# How often beat's broker thread looks at the broker.
BROKER_CHECK_INTERVAL = 5.0
# Short: a look at a healthy connection finds nothing to read.
DRAIN_TIMEOUT = 0.05


class BeatState(ProbeState):
    """What the probes and metrics of beat report. Beat's main thread writes
    ``last_tick``; the broker thread writes ``connected``, ``broker_problem`` and
    ``other_beat``; the probe server's thread reads them."""

    lifetime_unit = "ticks"

    def __init__(self, options: CeleryOptions, began: float, max_interval: float) -> None:
        super().__init__(options)
        self.began = began
        self.max_interval = max_interval
        self.loop_timeout = options.celery_loop_timeout
        self.last_tick: float | None = None
        self.ticks = 0
        self.connected = False
        self.broker_problem = "the broker was not reached yet"
        self.other_beat: str | None = None
        self.beat_metrics: Any = None
        if self.metrics_enabled:
            from hurricane.metrics.exposition import CeleryBeatMetrics

            self.beat_metrics = self.metrics = CeleryBeatMetrics(
                connected=lambda: int(self.connected), tick_age=self.tick_age
            )

    def lifetime_used(self) -> int:
        return self.ticks

    def tick_age(self) -> float:
        return 0.0 if self.last_tick is None else time.monotonic() - self.last_tick

    def ticked(self) -> None:
        self.last_tick = time.monotonic()
        self.ticks += 1
        if self.beat_metrics is not None:
            self.beat_metrics.ticks.inc()
        if not self.started:
            self.mark_started(self.last_tick - self.began)

    def not_alive_reason(self) -> str | None:
        if self.last_tick is None:
            return None
        age = time.monotonic() - self.last_tick
        limit = self.max_interval + self.loop_timeout
        if age > limit:
            return f"the beat scheduler has not ticked for {age:.0f} s (limit {limit:g} s)"
        return None

    def not_ready_reason(self) -> str | None:
        if self.other_beat:
            return self.other_beat
        if not self.connected:
            return f"the broker does not answer: {self.broker_problem}"
        return None


class BrokerWatch:
    """Beat's look at the broker, on a daemon thread: a connection of its own, kept,
    looked at every BROKER_CHECK_INTERVAL s; on RabbitMQ it also holds the lock."""

    def __init__(self, app: Any, state: BeatState) -> None:
        self.app = app
        self.state = state
        self.lock_queue = f"hurricane.celery.beat.{app.main or 'celery'}"
        self.connection: Any = None
        self.thread = threading.Thread(target=self.run, name="hurricane-beat-broker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        while True:
            self.look()
            time.sleep(BROKER_CHECK_INTERVAL)

    def look(self) -> None:
        state = self.state
        try:
            if self.connection is None:
                self.connection = self.app.connection_for_write()
                self.connection.connect()
            else:
                try:
                    # Reads what the broker sent (heartbeats, a close): a connection
                    # the broker dropped raises here.
                    self.connection.drain_events(timeout=DRAIN_TIMEOUT)
                except TimeoutError:
                    pass
            if self.connection.transport.driver_type == "amqp":
                self.take_lock()
        except Exception as error:  # every way a broker can fail differs per transport
            if state.connected or state.broker_problem != str(error):
                logger.warning("Beat's look at the broker failed: %s", error)
            state.broker_problem = str(error) or error.__class__.__name__
            state.connected = False
            self.close()
            return
        if not state.connected:
            logger.info("Beat reached the broker")
        state.connected = True

    def take_lock(self) -> None:
        """Hold the exclusive queue of this app; a second beat's declaration fails."""
        if self.state.other_beat is None and self.holding:
            return
        from amqp.exceptions import ResourceLocked
        from kombu import Queue

        channel = self.connection.channel()
        try:
            Queue(self.lock_queue, exclusive=True, auto_delete=True)(channel).declare()
        except ResourceLocked:
            if self.state.other_beat is None:
                logger.error(
                    "Another celery beat runs for this app (it holds the queue %s on the "
                    "broker): each periodic task would be sent twice; stop one of them "
                    "(in Kubernetes: one replica, strategy Recreate)",
                    self.lock_queue,
                )
            self.state.other_beat = f"another celery beat holds the lock queue {self.lock_queue}"
            return
        finally:
            try:
                channel.close()
            except Exception:  # a channel the broker closed already
                pass
        if self.state.other_beat is not None:
            logger.info("This beat holds the lock queue %s now", self.lock_queue)
        self.state.other_beat = None
        self.holding = True

    holding = False

    def close(self) -> None:
        self.holding = False
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # already broken: nothing to give back
                pass
            self.connection = None


def install_beat(app: Any, began: float) -> None:
    """Start the probes when ``app``'s beat starts, and see its scheduler tick."""

    def on_beat_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        scheduler = sender.scheduler
        options = load_options()
        state = BeatState(options, began, float(scheduler.max_interval))
        tick = scheduler.tick

        def ticked(*args: Any, **kwargs: Any) -> Any:
            interval = tick(*args, **kwargs)
            state.ticked()
            return interval

        close = scheduler.close

        def closed(*args: Any, **kwargs: Any) -> Any:
            # Beat's SIGTERM/SIGINT handler ends its loop, and the loop's last step
            # syncs the schedule through close(): from here on beat sends no task.
            # Readiness fails now, with its webhook, which gets a moment to leave.
            state.start_draining()
            try:
                return close(*args, **kwargs)
            finally:
                wait_for_last_webhook(state, "draining")

        # On this scheduler only, whatever its class (django-celery-beat's too).
        scheduler.tick = ticked
        scheduler.close = closed
        BrokerWatch(app, state).start()
        start_probes(state, options, "beat")

    signals.beat_init.connect(on_beat_init, weak=False)
