"""The ``consume`` process: the probe server, the AMQP client, signals and exit.

- startup probe: 200 once the consumer consumed for the first time;
- liveness: the process, its loop and the checks tagged ``hurricane``/``liveness``;
  never the broker, so a broker outage does not restart every worker pod;
- readiness: connected and consuming, the handler's backlog under
  ``--req-queue-len``, the readiness checks and the database.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

from hurricane.amqp.basehandler import (
    BrokerError,
    ConsumerObserver,
    _AMQPConsumer,
    setup_problem,
)
from hurricane.amqp.worker import AMQPClient
from hurricane.config.options import ConsumeOptions, OptionError
from hurricane.http.server import ConnectionLimits
from hurricane.metrics.requests import RequestQueueLengthMetric
from hurricane.platform.probes import ProbeServer, start_probe_server
from hurricane.platform.process import DRAIN_WEBHOOK_WAIT, handle_stop_signals, wait_for_delivery
from hurricane.platform.state import ProbeState

logger = logging.getLogger("hurricane.amqp.general")
T = TypeVar("T")


def load_handler(path: str) -> type[_AMQPConsumer]:
    """Import the handler class named by a dotted path; one clear line if it cannot."""
    from django.utils.module_loading import import_string

    try:
        handler = import_string(path)
    except ImportError as error:
        raise OptionError(f"cannot import the handler {path!r}: {error}") from None
    if not (isinstance(handler, type) and issubclass(handler, _AMQPConsumer)):
        raise OptionError(
            f"the handler {path!r} is not a subclass of hurricane.amqp.basehandler.TopicHandler"
        )
    return handler


def require(value: T | None, name: str, flag: str, variable: str) -> T:
    """``value`` of the option ``name``, which must be given."""
    if value is None:
        raise OptionError(f"no {name.replace('_', ' ')} given: pass {flag} or set {variable}")
    return value


class ConsumerState(ProbeState, ConsumerObserver):
    """What the probes and metrics of ``consume`` report."""

    lifetime_unit = "messages"

    def __init__(self, options: ConsumeOptions, began: float) -> None:
        super().__init__(options)
        self.began = began
        self.connected = False
        self.messages_handled = 0
        self.backlog = lambda: 0
        # Set once the engine exists (the same way as backlog).
        self.unsettled: Callable[[], int] = lambda: 0
        self.queue_messages: Callable[[], int | None] = lambda: None
        self.consumer_metrics = None
        if self.metrics_enabled:
            from hurricane.metrics.exposition import ConsumerMetrics

            self.consumer_metrics = self.metrics = ConsumerMetrics(
                backlog=lambda: self.backlog(),
                connected=lambda: int(self.connected),
                unsettled=lambda: self.unsettled(),
                queue_messages=lambda: self.queue_messages(),
            )

    def lifetime_used(self) -> int:
        return self.messages_handled

    def not_ready_reason(self) -> str | None:
        if not self.connected:
            return "not connected to the broker"
        backlog = self.backlog()
        if backlog >= self.req_queue_len:
            return f"{backlog} messages wait for the handler (limit {self.req_queue_len})"
        return None

    # -- ConsumerObserver ---------------------------------------------------------------------

    def connection_changed(self, connected: bool, reason: str | None = None) -> None:
        self.connected = connected
        if connected and not self.started:
            self.mark_started(time.monotonic() - self.began)
        elif connected and self.consumer_metrics is not None:
            self.consumer_metrics.reconnects.inc()
        if not connected and self.started:
            # Tell the operators now, not at the next readiness probe.
            self.report_readiness(False, [reason or "not connected to the broker"])

    def message_received(self) -> None:
        if self.consumer_metrics is not None:
            self.consumer_metrics.received.inc()

    def message_handled(self, seconds: float, failed: bool) -> None:
        self.messages_handled += 1  # only the handler thread writes it
        if self.consumer_metrics is not None:
            self.consumer_metrics.duration.observe(seconds)
            if failed:
                self.consumer_metrics.errors.inc()

    def message_settled(self, outcome: str, count: int = 1) -> None:
        metrics = self.consumer_metrics
        if metrics is None:
            return
        if outcome == "acked":
            metrics.acked.inc(count)
        else:
            metrics.rejected.labels("true" if outcome == "requeued" else "false").inc(count)

    def message_given_up(self, reason: str) -> None:
        if self.consumer_metrics is not None:
            self.consumer_metrics.given_up.labels(reason).inc()


class Consumer:
    """One ``consume`` process: ``main()`` starts the probes and consumes until a
    signal; exits 0 after a clean stop, 1 when the broker cannot be used."""

    def __init__(self, options: ConsumeOptions, handle_signals: bool = True) -> None:
        # Without --queue the broker names one, as django-hurricane 1.6 allowed.
        handler = require(
            options.handler, "handler", "HANDLER (the first argument)", "HURRICANE_HANDLER"
        )
        self.exchange = require(options.exchange, "exchange", "--exchange", "HURRICANE_EXCHANGE")
        self.amqp_host = require(options.amqp_host, "amqp_host", "--amqp-host", "AMQP_HOST")
        self.options = options
        self.handler_class = load_handler(handler)
        problem = setup_problem(
            self.handler_class, options.queue, options.queue_type, options.dead_letter_exchange
        )
        if problem:
            raise OptionError(problem)
        self.handle_signals = handle_signals
        self.began = time.monotonic()
        self.probes = ProbeServer()

    def run(self) -> int:
        return asyncio.run(self.main())

    async def main(self) -> int:
        options = self.options
        loop = asyncio.get_running_loop()
        self.state = state = ConsumerState(options, self.began)
        self.client = client = AMQPClient(
            self.handler_class,
            options.queue,
            self.exchange,
            self.amqp_host,
            options.amqp_port,
            options.amqp_vhost,
            amqp_user=options.amqp_user,
            amqp_password=options.amqp_password,
            graceful_timeout=options.graceful_timeout,
            observer=state,
            routing_key=options.routing_key,
            # Left to the handler's 1.6 _prefetch_count, if it sets one, unless given.
            prefetch=None if options.sources.get("prefetch") == "default" else options.prefetch,
            durable=options.durable,
            dead_letter_exchange=options.dead_letter_exchange,
            dead_letter_queue=options.dead_letter_queue,
            requeue_on_error=options.requeue_on_error,
            heartbeat=options.amqp_heartbeat,
            queue_type=options.queue_type,
            max_deliveries=options.max_deliveries,
            max_message_size=options.max_message_size,
        )
        state.backlog = lambda: client.engine.backlog
        state.unsettled = lambda: client.engine.unsettled
        state.queue_messages = lambda: client.engine.queue_messages
        RequestQueueLengthMetric.backlog_source = state.backlog
        if self.handle_signals:
            handle_stop_signals(loop, self.on_signal)
        # Slow or oversized clients get the same limits as on serve's probe port.
        self.probes = start_probe_server(
            state, options, options.probe_port, ConnectionLimits.defaults()
        )
        if self.probes.application is not None:
            logger.info(
                "Probe application running on port %d: %s", options.probe_port, self.probes.urls
            )
        try:
            await client.consume(options.reconnect)
        except BrokerError as error:
            if not state.started:
                await state.report_failed_start(traceback.format_exc())
            else:
                await wait_for_delivery(state.last_webhook)
            logger.error("%s", error)  # last, so that it ends the log of the pod
            return 1
        await wait_for_delivery(state.last_webhook, DRAIN_WEBHOOK_WAIT, "draining")
        logger.info("Stopped consuming; exiting")
        return 0

    def on_signal(self, signum: int) -> None:
        logger.info("%s received: finishing the message in hand", signal.Signals(signum).name)
        self.state.start_draining()
        self.client.request_stop()


def run_consumer(options: ConsumeOptions) -> int:
    """Run ``consume`` with resolved options; returns the process exit code. Bad
    options raise OptionError before anything starts."""
    from django.conf import settings

    from hurricane.platform.logfilters import quiet_pika_log
    from hurricane.platform.process import run_process

    consumer = Consumer(options)

    def run(handle_signals: bool) -> int:
        quiet_pika_log(settings)  # once logging is set up: it depends on the level
        consumer.handle_signals = handle_signals
        return consumer.run()

    return run_process(options, run, banner="Starting a Tornado-powered Django AMQP consumer")
