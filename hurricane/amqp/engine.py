"""The consumer engine: the broker connection, the handler thread and the settling
of messages, apart from the handler class users subclass.

A :class:`ConsumerEngine` belongs to one handler (``hurricane.amqp.basehandler``
makes it in the handler's ``__init__``) and holds every piece of the consumer's
state: the pika connection and channel, the event loop, the handler thread, the
queue of deliveries and the outbox of acks, rejects and publishes, the delivery
counts, the waiters of the steps of a connect, the channel generation, the stop
and the settings. The handler object holds none of it, so whatever attributes a
handler sets on itself cannot change what the engine does. The engine calls the
handler's hooks (:class:`HandlerHooks`): ``on_message`` on the handler thread,
``setup_exchange`` to start django-hurricane 1.6's declaration chain, and 1.6's
notifications (``on_connection_closed``, ...).

Threads: pika's connection lives on the asyncio event loop (which also answers
the probes); ``on_message`` runs on a handler thread of its own, one message at
a time, in delivery order. Acks, rejects and publishes made from the handler are
queued and carried out on the loop, so the connection keeps exchanging
heartbeats however long a handler works, and pika is only ever touched from
the loop.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple, Protocol

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection

from hurricane.amqp import logger
from hurricane.amqp.bodies import body_size, limit_body_size
from hurricane.amqp.deliveries import Delivery, DeliveryCounter
from hurricane.config.masking import shown_value

# Seconds to wait for the broker to answer one step of opening or closing.
BROKER_STEP_TIMEOUT = 15.0
# Seconds a stop waits for the broker to confirm the consumer's cancel and the
# connection's close: a broker that answers does within milliseconds, and one that
# stopped answering must not hold the pod past its termination grace period.
BROKER_CLOSE_WAIT = 2.0
# Backing off after failures: the base, doubling with each further step, up to the
# maximum (see ConsumerEngine._handler_failed).
ERROR_PAUSE_BASE = 0.5
ERROR_PAUSE_MAX = 10.0
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024**2
DEFAULT_PREFETCH = 10
# How often the consumer asks the broker how many messages its queue holds (the
# hurricane_amqp_queue_messages gauge, a signal for autoscaling).
QUEUE_LOOK_INTERVAL = 5.0


class HandlerHooks(Protocol):
    """What the engine calls on the handler (``_AMQPConsumer``): each may be
    overridden by the handler's class."""

    def on_message(self, channel: Any, basic_deliver: Any, properties: Any, body: bytes) -> None:
        """One message, on the handler thread."""

    def setup_exchange(self, exchange_name: str) -> None:
        """The first step of the declaration chain, on the loop."""

    def on_connection_closed(self, connection: Any, reason: BaseException) -> None: ...

    def on_channel_closed(self, channel: Any, reason: BaseException) -> None: ...

    def on_consumer_cancelled(self, method_frame: Any) -> None: ...

    def on_cancelok(self, frame: Any, userdata: str | None) -> None: ...


class Settle(NamedTuple):
    """Acknowledge (``ack``) or give back (``nack``) a delivery, on the loop."""

    kind: str  # "ack" or "nack"
    delivery_tag: int
    requeue: bool = False  # nack: back to the queue, else rejected (to the dead-letter exchange)
    multiple: bool = False  # every outstanding delivery up to delivery_tag


class Publish(NamedTuple):
    """Publish a message on the consumer's channel, on the loop."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Any = None
    mandatory: bool = False


Operation = Settle | Publish


class BrokerError(Exception):
    """The consumer cannot go on; the message is one line for the user. ``fatal``
    errors (bad credentials, unknown vhost, a topology the broker refuses) are not
    cured by reconnecting."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def describe_broker_error(error: BaseException) -> str:
    """One line saying why pika failed, without its nested exception reprs."""
    if isinstance(error, pika.exceptions.ConnectionOpenAborted) and "Timeout" in str(error):
        # pika's stack_timeout ended the opening: its own wording is about a close.
        return (
            f"no AMQP handshake within {BROKER_STEP_TIMEOUT:g} s (the port accepts "
            "connections, but nothing answers on it as a broker)"
        )
    if isinstance(error, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{error.reply_code} {error.reply_text}"
    if isinstance(error, pika.exceptions.AMQPConnectionError) and error.args:
        inner = error.args[0]
        if isinstance(inner, BaseException):
            return describe_broker_error(inner)
        return str(inner)
    exceptions = getattr(error, "exceptions", None)  # pika's connection workflow failure
    if exceptions:
        return describe_broker_error(exceptions[-1])
    nested = getattr(error, "exception", None)  # a socket connector error
    if isinstance(nested, BaseException):
        return describe_broker_error(nested)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or error.__class__.__name__


class ThreadSafeChannel:
    """What ``on_message`` gets as its channel: ``basic_ack``, ``basic_nack``,
    ``basic_reject`` and ``basic_publish`` are safe to call from the handler thread
    (they are carried out on the event loop, in order); anything else is the pika
    channel's own attribute, to be read only."""

    def __init__(self, engine: ConsumerEngine, channel: Any) -> None:
        self._engine = engine
        self._channel = channel

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self._engine.settle(delivery_tag, "ack", multiple=multiple)

    def basic_nack(
        self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True
    ) -> None:
        self._engine.settle(delivery_tag, "nack", requeue=requeue, multiple=multiple)

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self._engine.settle(delivery_tag, "nack", requeue=requeue)

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        self._engine.publish(exchange, routing_key, body, properties, mandatory)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


class ConsumerObserver:
    """Told what the consumer does; the ``consume`` process counts it in metrics and
    probes. Called on the event loop, except where "handler thread" says otherwise."""

    def connection_changed(self, connected: bool, reason: str | None = None) -> None:
        """Consuming began (``connected``), or the connection was lost."""

    def message_received(self) -> None:
        """A message arrived."""

    def message_handled(self, seconds: float, failed: bool) -> None:
        """``on_message`` returned or raised (handler thread)."""

    def message_settled(self, outcome: str, count: int = 1) -> None:
        """``count`` messages were acked (``acked``), rejected (``rejected``) or
        requeued (``requeued``) on the broker."""

    def message_given_up(self, reason: str) -> None:
        """A message was rejected for good, unhandled or failed: ``max_deliveries``,
        ``max_message_size`` or ``handler_error`` (with ``--requeue-on-error false``).
        Called on the loop or the handler thread."""


class ConsumerEngine:
    """Consumes one queue for one handler: declares the exchange, the queue and its
    bindings (through the handler's 1.6 hooks), consumes with a prefetch window,
    hands each message to the handler's ``on_message`` on the handler thread and
    carries out how the handler settles it. Connecting again after a loss is
    :class:`hurricane.amqp.worker.AMQPClient`'s business."""

    def __init__(
        self,
        handler: HandlerHooks,
        queue_name: str | None,
        exchange_name: str,
        host: str = "127.0.0.1",
        port: int = 5672,
        vhost: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.handler = handler
        self.queue_name = queue_name or ""
        # The queue consumed: --queue, or the name the broker gave it (amq.gen-...).
        self.queue = self.queue_name
        self.exchange_name = exchange_name
        self.host = host
        self.port = int(port)
        self.vhost = vhost or "/"
        self.username = username
        self.password = password
        # Set by configure(); these defaults suit a handler started by hand.
        self.routing_key: str | None = None
        self.prefetch = DEFAULT_PREFETCH
        # The prefetch count the handler set as 1.6's _prefetch_count, if it did.
        self.handler_prefetch: int | None = None
        self.durable = False
        self.dead_letter_exchange: str | None = None
        self.dead_letter_queue: str | None = None
        self.requeue_on_error = True
        self.heartbeat: int | None = None
        self.queue_type = "classic"
        self.max_deliveries = DEFAULT_MAX_DELIVERIES
        self.max_message_size = DEFAULT_MAX_MESSAGE_SIZE
        self.deliveries = DeliveryCounter(self.max_deliveries, from_header=False)
        self.observer = ConsumerObserver()
        # Kept from the original library: did the last connection consume, and
        # should it be opened again?
        self.was_consuming = False
        self.should_reconnect = False
        # What run() runs (set by the AMQPClient that runs the handler).
        self.runner: Callable[[], Coroutine[Any, Any, None]] | None = None

        self.connection: Any = None
        self.channel: Any = None
        self.consumer_tag: str | None = None
        self.consuming = False
        self.closing = False
        self.closed: asyncio.Future | None = None  # resolves with why the connection closed
        self._loop: asyncio.AbstractEventLoop | None = None
        # A stop (stop(), a signal): asked from any thread, awaited by the client.
        self._stop_requested = False
        self._stop_event: asyncio.Event | None = None
        # The declaration chain in progress: what it does now, when it is done, and
        # the bindings it still waits for.
        self._setup_step = ""
        self._setup_done: asyncio.Future | None = None
        self._bindings_pending = 0
        self._routing_keys: list[str] = []
        self._consume_generation = -1  # the channel start_consuming consumed on
        # Increases with every channel: a delivery tag means something only on the
        # channel that delivered it.
        self._generation = 0
        self._waiters: set[asyncio.Future] = set()
        self._deliveries: queue.SimpleQueue = queue.SimpleQueue()
        self._outbox: collections.deque = collections.deque()
        self._outbox_lock = threading.Lock()  # the handler thread and the loop
        # Delivery tags of the current channel not yet settled, oldest first (loop only).
        self._unsettled: collections.deque = collections.deque()
        self._flush_scheduled = False
        # The queue's ready messages as the broker last reported them, asked on a
        # channel of its own (None: not known); the loop writes, the probes read.
        self.queue_messages: int | None = None
        self._look_channel: Any = None
        self._look_timer: asyncio.TimerHandle | None = None
        self._handler_thread: threading.Thread | None = None
        self._in_hand: tuple[int, int] | None = None  # (generation, delivery tag)
        # How the handler settled the message in hand: "ack", "nack", "requeue" or None.
        self._in_hand_outcome: str | None = None
        # Messages that failed for the first time one after the other, no success between.
        self._failures_in_a_row = 0
        self._stopping = threading.Event()  # cuts the pause after a failure short

    @property
    def handler_name(self) -> str:
        """The handler's class name, for log lines."""
        return type(self.handler).__name__

    def configure(
        self,
        routing_key: str | None = None,
        prefetch: int | None = None,
        durable: bool = False,
        dead_letter_exchange: str | None = None,
        dead_letter_queue: str | None = None,
        requeue_on_error: bool = True,
        heartbeat: int | None = None,
        queue_type: str = "classic",
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        *,
        handler_declares_queue: bool = False,
    ) -> None:
        """Settings beyond the original constructor's (the consume options).
        ``prefetch`` None keeps the handler's :attr:`handler_prefetch` (1.6's
        ``_prefetch_count``), else the default. ``handler_declares_queue``: the
        handler overrides ``setup_queue``. Whether the handler can consume so is
        ``hurricane.amqp.basehandler.configure_handler``'s to check, before."""
        self.routing_key = routing_key
        handler_prefetch = self.handler_prefetch
        if prefetch is None:
            prefetch = handler_prefetch or DEFAULT_PREFETCH
        elif handler_prefetch not in (None, prefetch):
            logger.info(
                "--prefetch %d replaces the _prefetch_count %d that %s sets",
                prefetch,
                handler_prefetch,
                self.handler_name,
            )
        self.prefetch = prefetch
        self.handler_prefetch = None
        self.queue_type = queue_type
        # A quorum queue is durable by nature; an exchange that were not would lose
        # the queue's binding with a broker restart.
        self.durable = durable or queue_type == "quorum"
        self.dead_letter_exchange = dead_letter_exchange
        self.dead_letter_queue = dead_letter_queue or (
            f"{self.queue_name}.dead-letter" if dead_letter_exchange else None
        )
        self.requeue_on_error = requeue_on_error
        self.heartbeat = heartbeat
        if self.durable and handler_declares_queue:
            logger.info(
                "%s.setup_queue() declares the queue: --durable applies to the exchange",
                self.handler_name,
            )
        self.max_deliveries = max_deliveries
        self.max_message_size = max_message_size
        self.deliveries = DeliveryCounter(max_deliveries, from_header=queue_type == "quorum")

    # -- settling, from any thread ------------------------------------------------------------

    def settle(
        self,
        delivery_tag: int,
        kind: str,
        requeue: bool = False,
        multiple: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Settle a delivery (``kind``: "ack" or "nack"), from any thread: carried out
        on the loop, in order, after ``delay`` seconds if given."""
        in_hand = self._in_hand
        if in_hand is not None and in_hand[1] == delivery_tag:
            self._in_hand_outcome = "requeue" if requeue else kind
            generation = in_hand[0]
        else:
            generation = self._generation
        operation = Settle(kind, delivery_tag, requeue, multiple)
        if not delay:
            self._post(operation, generation)
            return
        # Carried out later, on the loop: a channel lost (or closed by a stop) by then
        # has returned the message to the queue already, and the operation is dropped.
        loop = self._loop
        if loop is None:  # never connected: no message was delivered to settle
            return
        try:
            loop.call_soon_threadsafe(loop.call_later, delay, self._post, operation, generation)
        except RuntimeError:  # the loop has closed: the broker requeues the message
            pass

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish on the consumer's channel, from any thread (carried out on the loop)."""
        self._post(Publish(exchange, routing_key, body, properties, mandatory))

    def _post(self, operation: Operation, generation: int | None = None) -> None:
        """Queue an operation for the loop, from any thread; one wake-up carries every
        operation queued until the loop gets to it (a wake-up is a system call)."""
        generation = self._generation if generation is None else generation
        with self._outbox_lock:
            self._outbox.append((generation, operation))
            if self._flush_scheduled or self._loop is None:
                return
            # Scheduled under the lock: an operation queued after this one finds the
            # flush already on its way and rides along, in order.
            self._flush_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop has closed: the broker requeues the message
            pass

    def _flush(self) -> None:
        """Carry out the queued operations on the loop, in order.

        A run of acks for the oldest outstanding deliveries goes out as one
        ``basic_ack(multiple=True)``: one frame instead of many, which is what keeps
        the consumer as fast as a plain pika one at a small prefetch."""
        with self._outbox_lock:
            outbox, self._outbox = self._outbox, collections.deque()
            self._flush_scheduled = False
        unsettled = self._unsettled
        run_end = None  # highest tag of the run of acks not yet sent
        run_length = 0
        for generation, operation in outbox:
            channel = self.channel
            if generation != self._generation or channel is None or not channel.is_open:
                logger.debug(
                    "Dropping %s for a closed channel (the broker delivers again what was "
                    "not acknowledged)",
                    type(operation).__name__ if isinstance(operation, Publish) else operation.kind,
                )
                continue
            if (
                isinstance(operation, Settle)
                and operation.kind == "ack"
                and not operation.multiple
                and unsettled
                and unsettled[0] == operation.delivery_tag
            ):
                unsettled.popleft()
                run_end = operation.delivery_tag
                run_length += 1
                continue
            if run_end is not None:
                self._send_ack_run(channel, run_end, run_length)
                run_end, run_length = None, 0
            if isinstance(operation, Publish):
                channel.basic_publish(*operation)
            elif operation.kind == "ack":
                self._forget(operation.delivery_tag, operation.multiple)
                channel.basic_ack(operation.delivery_tag, multiple=operation.multiple)
                self.observer.message_settled("acked")
            else:
                self._forget(operation.delivery_tag, operation.multiple)
                channel.basic_nack(
                    operation.delivery_tag, multiple=operation.multiple, requeue=operation.requeue
                )
                self.observer.message_settled("requeued" if operation.requeue else "rejected")
        if run_end is not None and self.channel is not None:
            self._send_ack_run(self.channel, run_end, run_length)

    def _send_ack_run(self, channel: Any, last_tag: int, count: int) -> None:
        channel.basic_ack(last_tag, multiple=count > 1)
        self.observer.message_settled("acked", count)

    def _forget(self, delivery_tag: int, multiple: bool) -> None:
        """The delivery (or, with ``multiple``, every one up to it) is settled."""
        unsettled = self._unsettled
        if multiple:
            while unsettled and unsettled[0] <= delivery_tag:
                unsettled.popleft()
            return
        try:
            unsettled.remove(delivery_tag)
        except ValueError:
            pass

    # -- the handler thread -----------------------------------------------------------------

    def _start_handler_thread(self) -> None:
        if self._handler_thread is None or not self._handler_thread.is_alive():
            self._handler_thread = threading.Thread(
                target=self._handle_messages, name="hurricane-amqp-handler", daemon=True
            )
            self._handler_thread.start()

    def _handle_messages(self) -> None:
        while True:
            item = self._deliveries.get()
            if item is None:
                return
            self._handle(*item)
            # Not held while waiting for the next message, so that the bodies in memory
            # are those the broker has outstanding (see the bodies module).
            item = None

    def _handle(
        self, generation: int, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        from django.db import close_old_connections

        if generation != self._generation:
            return  # its channel closed: the broker delivers it again
        if self._stop_requested:
            # stop() came (from the handler, a signal): no message is begun after it.
            # One the broker sent meanwhile (after the ack of the message that
            # stopped) goes back to the queue at once, for another consumer.
            self._post(Settle("nack", method.delivery_tag, requeue=True), generation)
            return
        delivery = self.deliveries.delivered(method, properties, body)
        if not self.deliveries.allows(delivery.number):
            # Put back by the handler itself, or in hand when a connection was lost.
            self._give_up(
                generation,
                delivery,
                "max_deliveries",
                f"delivered {delivery.number} times, over --max-deliveries {self.max_deliveries}",
            )
            self.deliveries.settled(delivery)
            return
        self._in_hand = (generation, method.delivery_tag)
        self._in_hand_outcome = None
        failed = False
        began = time.perf_counter()
        # As Django does around a request: no connection outlives CONN_MAX_AGE
        # or a broken transaction.
        close_old_connections()
        try:
            self.handler.on_message(ThreadSafeChannel(self, channel), method, properties, body)
        except Exception as error:
            failed = True
            self._handler_failed(generation, delivery, error)
        finally:
            close_old_connections()
            self._in_hand = None
        if self._in_hand_outcome == "requeue":
            self.deliveries.returned(delivery, failed)
        elif self._in_hand_outcome is not None:
            self.deliveries.settled(delivery)
        if not failed:
            self._failures_in_a_row = 0
        self.observer.message_handled(time.perf_counter() - began, failed)

    def _handler_failed(self, generation: int, delivery: Delivery, error: Exception) -> None:
        """Log the failure and settle the message as configured.

        The traceback is logged once per message (the first time it fails in this
        process); a retry gets one line. A message to retry goes back to the queue
        after a delay that doubles with each of its deliveries (0.5 s, 1 s, 2 s, ...),
        held meanwhile as unacknowledged, while the handler goes on with the other
        messages: one bad message neither comes straight back nor holds up the rest,
        and --max-deliveries ends its retries. Messages failing for the first time one
        after the other point at something they all need (a database): from the
        second on, the handler itself pauses, longer with each, so that an outage
        does not turn into a hot loop of failures."""
        message = describe_message(delivery)
        first_failure = not self.deliveries.failed_here_before(delivery)
        if first_failure:
            self._failures_in_a_row += 1
        if self._in_hand_outcome is not None:
            logger.error("on_message raised for %s after settling it", message, exc_info=error)
            return
        if not self.requeue_on_error:
            self._give_up(
                generation,
                delivery,
                "handler_error",
                "on_message raised (--requeue-on-error is false)",
                error,
            )
            return
        if not self.deliveries.allows(delivery.number + 1):
            self._give_up(
                generation,
                delivery,
                "max_deliveries",
                f"on_message raised on delivery {delivery.number} of --max-deliveries "
                f"{self.max_deliveries} ({describe_error(error)})",
                error if first_failure else None,
            )
            return
        delay = backoff(delivery.number)
        pause = backoff(self._failures_in_a_row - 1) if self._failures_in_a_row > 1 else 0.0
        outcome = f"requeueing it in {delay:.1f} s"
        if pause:
            outcome += (
                f"; {self._failures_in_a_row} messages failed in a row: pausing the "
                f"handler {pause:.1f} s"
            )
        limit = f" of --max-deliveries {self.max_deliveries}" if self.max_deliveries else ""
        if first_failure:
            logger.warning(
                "on_message raised for %s on delivery %d%s; %s",
                message,
                delivery.number,
                limit,
                outcome,
                exc_info=error,
            )
        else:
            logger.warning(
                "on_message raised again for %s on delivery %d%s: %s; %s",
                message,
                delivery.number,
                limit,
                describe_error(error),
                outcome,
            )
        self.settle(delivery.method.delivery_tag, "nack", requeue=True, delay=delay)
        if pause:
            self._stopping.wait(pause)

    def _give_up(
        self,
        generation: int,
        delivery: Delivery,
        reason: str,
        why: str,
        error: BaseException | None = None,
    ) -> None:
        """Reject a message for good, with one ERROR line saying why and what became of
        it: the broker dead-letters it where a dead-letter exchange is set up, else
        drops it. Safe from the loop and from the handler thread."""
        if self.dead_letter_exchange:
            fate = f"dead-lettered to exchange {self.dead_letter_exchange!r}"
        else:
            fate = (
                "dropped, as no --dead-letter-exchange is set (unless a broker policy "
                "dead-letters the queue)"
            )
        logger.error("Gave up on %s: %s; %s", describe_message(delivery), why, fate, exc_info=error)
        tag = delivery.method.delivery_tag
        if self._in_hand == (generation, tag):
            self.settle(tag, "nack")  # noted as the outcome of the message in hand
        else:
            self._post(Settle("nack", tag, requeue=False), generation)
        self.observer.message_given_up(reason)

    @property
    def backlog(self) -> int:
        """Messages received and waiting for the handler thread."""
        return self._deliveries.qsize()

    @property
    def unsettled(self) -> int:
        """Messages delivered on the current channel and not yet settled."""
        return len(self._unsettled)

    def _look_at_queue(self) -> None:
        """Ask the broker how many messages the queue holds (a passive declare), now
        and every QUEUE_LOOK_INTERVAL s while connected. On a channel of its own: a
        refusal closes that channel, never the one that consumes."""
        self._look_timer = None
        connection = self.connection
        if self.closing or connection is None or not connection.is_open or not self.queue:
            self.queue_messages = None
            return
        loop = self._loop
        assert loop is not None  # connect() set it

        def again() -> None:
            if not self.closing:
                self._look_timer = loop.call_later(QUEUE_LOOK_INTERVAL, self._look_at_queue)

        def reported(frame: Any) -> None:
            self.queue_messages = frame.method.message_count
            again()

        def ask(channel: Any) -> None:
            channel.queue_declare(queue=self.queue, passive=True, callback=reported)

        def look_channel_closed(channel: Any, reason: BaseException) -> None:
            if channel is self._look_channel:
                self._look_channel = None
                self.queue_messages = None
                logger.debug("The look at the queue failed: %s", describe_broker_error(reason))
                again()

        def opened(channel: Any) -> None:
            self._look_channel = channel
            channel.add_on_close_callback(look_channel_closed)
            ask(channel)

        channel = self._look_channel
        if channel is not None and channel.is_open:
            ask(channel)
        else:
            connection.channel(on_open_callback=opened)

    def _on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._unsettled.append(method.delivery_tag)
        self.observer.message_received()
        size = body_size(body)
        if size > self.max_message_size:
            # Rejected here, on the loop, so that what waits for the handler stays
            # within --prefetch messages of at most --max-message-size each.
            self._give_up(
                self._generation,
                Delivery(method, properties, body),
                "max_message_size",
                f"its body is {describe_size(size)}, over --max-message-size "
                f"{describe_size(self.max_message_size)} (not read)",
            )
            return
        self._deliveries.put((self._generation, channel, method, properties, body))

    # -- connecting ---------------------------------------------------------------------------

    def connection_parameters(self) -> pika.ConnectionParameters:
        extra: dict[str, Any] = {}
        if self.username or self.password:
            # RabbitMQ's default user is guest; a password alone is guest's.
            extra["credentials"] = pika.PlainCredentials(
                self.username or "guest", self.password or ""
            )
        if self.heartbeat is not None:
            extra["heartbeat"] = self.heartbeat
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            connection_attempts=1,
            socket_timeout=BROKER_STEP_TIMEOUT,
            stack_timeout=BROKER_STEP_TIMEOUT,
            client_properties={
                "connection_name": f"hurricane consume {self.queue_name or self.exchange_name}"
            },
            **extra,
        )

    @property
    def broker(self) -> str:
        """Where the broker is, for messages: ``host:port/vhost``, each part masked
        when it was read from a file (hurricane.config.masking)."""
        vhost = self.vhost if self.vhost.startswith("/") else "/" + self.vhost
        host = shown_value("AMQP_HOST", self.host)
        port = shown_value("AMQP_PORT", self.port)
        return f"{host}:{port}{shown_value('AMQP_VHOST', vhost)}"

    async def connect(self) -> None:
        """Open a connection and a channel, declare the topology and start consuming.
        Raises :class:`BrokerError` when any step fails."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.closing = False
        self.should_reconnect = False
        self.closed = loop.create_future()
        opened = self._waiter()
        logger.info("Connecting to %s", self.broker)

        def on_open_error(_connection: Any, error: BaseException) -> None:
            self._fail_waiters(self._connection_error(error))
            closed = self.closed
            if closed is not None and not closed.done():
                closed.set_result(error)

        self.connection = AsyncioConnection(
            self.connection_parameters(),
            on_open_callback=lambda connection: _resolve(opened, connection),
            on_open_error_callback=on_open_error,
            on_close_callback=self._connection_closed,
            custom_ioloop=loop,
        )
        try:
            # pika's stack_timeout (the same BROKER_STEP_TIMEOUT) ends a connection
            # that does not open and reports it through on_open_error; waiting a
            # moment longer lets that clean failure come first.
            await self._step(opened, "connecting", BROKER_STEP_TIMEOUT + 1.0)
            await self._open_channel_and_consume()
        except BaseException:
            self.abort()
            raise
        self.was_consuming = True
        self._start_handler_thread()
        self._look_at_queue()
        logger.info(
            "Consuming %r (%s queue%s; exchange %r, routing keys %s; prefetch %d, "
            "deliveries %s, bodies up to %s) from %s",
            self.queue,
            self.queue_type,
            "" if self.queue_name else " named by the broker, exclusive to this connection",
            self.exchange_name,
            ", ".join(map(repr, self._routing_keys)),
            self.prefetch,
            f"up to {self.max_deliveries}" if self.max_deliveries else "unlimited",
            describe_size(self.max_message_size),
            self.broker,
        )

    async def _open_channel_and_consume(self) -> None:
        channel = await self._step(
            self._call(lambda done: self.connection.channel(on_open_callback=done)),
            "opening a channel",
        )
        self._generation += 1
        self._unsettled = collections.deque()
        self.channel = channel
        channel.add_on_close_callback(self._channel_closed)
        channel.add_on_cancel_callback(self._consumer_cancelled)
        limit_body_size(channel, self.max_message_size)
        if self.dead_letter_exchange:
            await self._declare_dead_letter_queue(channel)
        self._setup_done = self._waiter()
        self.handler.setup_exchange(self.exchange_name)
        await self._step(self._setup_done, lambda: self._setup_step)

    def queue_arguments(self) -> dict[str, Any]:
        """The arguments the queue is declared with: its type unless classic, and its
        dead-letter exchange (--queue-type, --dead-letter-exchange)."""
        arguments: dict[str, Any] = {}
        if self.queue_type != "classic":
            arguments["x-queue-type"] = self.queue_type
        if self.dead_letter_exchange:
            arguments["x-dead-letter-exchange"] = self.dead_letter_exchange
            arguments["x-dead-letter-routing-key"] = self.queue_name
        return arguments

    async def _declare_dead_letter_queue(self, channel: Any) -> None:
        await self._step(
            self._call(
                lambda done: channel.exchange_declare(
                    self.dead_letter_exchange, "direct", durable=self.durable, callback=done
                )
            ),
            f"declaring the dead-letter exchange {self.dead_letter_exchange!r}",
        )
        type_argument = {"x-queue-type": self.queue_type} if self.queue_type != "classic" else {}
        await self._step(
            self._call(
                lambda done: channel.queue_declare(
                    self.dead_letter_queue,
                    durable=self.durable,
                    arguments=type_argument or None,
                    callback=done,
                )
            ),
            f"declaring the dead-letter queue {self.dead_letter_queue!r}",
        )
        await self._step(
            self._call(
                lambda done: channel.queue_bind(
                    self.dead_letter_queue,
                    self.dead_letter_exchange,
                    routing_key=self.queue_name,
                    callback=done,
                )
            ),
            "binding the dead-letter queue",
        )

    # -- django-hurricane 1.6's declaration chain ---------------------------------------------
    # The handler's hooks (setup_exchange, on_exchange_declareok, setup_queue, ...) are
    # the chain: each step is a pika call whose callback starts the next hook, as in
    # 1.6, so that a handler's override of a step takes effect. The base hooks call
    # these steps. They run on the event loop; connect() waits for the chain to end.

    def declare_exchange(
        self, exchange_name: str, exchange_type: str | None, callback: Callable[[Any], None]
    ) -> None:
        """Declare the exchange (durable with --durable); then ``callback``."""
        self._setup_step = f"declaring the exchange {exchange_name!r}"
        self.channel.exchange_declare(
            exchange=exchange_name,
            exchange_type=exchange_type or "topic",
            durable=self.durable,
            callback=callback,
        )

    def declare_queue(
        self, queue_name: str, arguments: dict[str, Any], callback: Callable[[Any], None]
    ) -> None:
        """Declare the queue (durable with --durable; named by the broker and
        exclusive to the connection without --queue); then ``callback``."""
        self._setup_step = (
            f"declaring the queue {queue_name!r}" if queue_name else "declaring a queue"
        )
        self.channel.queue_declare(
            queue=queue_name,
            durable=self.durable and bool(queue_name),
            exclusive=not queue_name,
            arguments=arguments or None,
            callback=callback,
        )

    def bind_queue(
        self, queue_name: str, routing_keys: list[str], callback: Callable[[str], Any]
    ) -> None:
        """Bind the declared queue (``queue_name``: its name, perhaps the broker's)
        to the exchange with each of ``routing_keys``; ``callback(key)`` is what pika
        calls when that binding is in place."""
        self._routing_keys = list(routing_keys)
        self._bindings_pending = len(routing_keys)
        for key in routing_keys:
            self._setup_step = f"binding the queue with routing key {key!r}"
            self.channel.queue_bind(
                queue_name, self.exchange_name, routing_key=key, callback=callback(key)
            )

    def binding_done(self) -> bool:
        """A binding is in place: whether it was the last one."""
        self._bindings_pending -= 1
        return self._bindings_pending <= 0

    def set_qos(self, callback: Callable[[Any], None]) -> None:
        """Set the prefetch count (--prefetch); then ``callback``."""
        self._setup_step = "setting the prefetch count"
        self.channel.basic_qos(prefetch_count=self.prefetch, callback=callback)

    def start_consuming(self) -> None:
        """Start consuming the queue (once per channel, however often it is called)."""
        if self._consume_generation == self._generation:
            return
        self._consume_generation = self._generation
        self._setup_step = "starting to consume"
        done = self._setup_done

        def consuming(frame: Any) -> None:
            self.consuming = True
            if done is not None:
                _resolve(done, frame)

        self.consumer_tag = self.channel.basic_consume(
            self.queue, self._on_delivery, callback=consuming
        )

    def _waiter(self) -> asyncio.Future:
        """A future that fails if the channel or connection closes first."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("nothing to wait for before connect()")
        future = loop.create_future()
        self._waiters.add(future)
        future.add_done_callback(self._waiters.discard)
        return future

    def _call(self, start: Callable[[Callable[[Any], None]], Any]) -> asyncio.Future:
        future = self._waiter()
        start(lambda result: _resolve(future, result))
        return future

    async def _step(
        self,
        future: asyncio.Future,
        what: str | Callable[[], str],
        timeout: float = BROKER_STEP_TIMEOUT,
    ) -> Any:
        """Await one step; ``what`` it is (or says, when called, what it was at)."""
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise BrokerError(
                f"the broker at {self.broker} did not answer within "
                f"{BROKER_STEP_TIMEOUT:g} s while {what if isinstance(what, str) else what()}"
            ) from None

    def _fail_waiters(self, error: BrokerError) -> None:
        for future in list(self._waiters):
            if not future.done():
                future.set_exception(error)

    def _connection_error(self, error: BaseException) -> BrokerError:
        if isinstance(error, pika.exceptions.ProbableAuthenticationError):
            user = shown_value("AMQP_USER", self.username or "guest")
            return BrokerError(
                f"the broker at {self.broker} refused the credentials of user {user!r} "
                "(check AMQP_USER and AMQP_PASSWORD)",
                fatal=True,
            )
        if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
            return BrokerError(
                f"the broker at {self.broker} denied access to virtual host "
                f"{shown_value('AMQP_VHOST', self.vhost)!r} "
                "(it does not exist, or the user may not use it; check AMQP_VHOST)",
                fatal=True,
            )
        return BrokerError(
            f"cannot connect to the broker at {self.broker}: {describe_broker_error(error)}"
        )

    # -- losing and closing -----------------------------------------------------------------

    def _channel_lost(self) -> None:
        """The channel is gone, and with it the meaning of its delivery tags: the
        messages it delivered that the handler has not begun are dropped, not run
        (there is no channel left to settle them on, and the broker delivers every
        unacknowledged one again, to this consumer or another)."""
        self.channel = None
        self.consuming = False
        self._generation += 1
        dropped = 0
        while True:
            try:
                item = self._deliveries.get_nowait()
            except queue.Empty:
                break
            if item is None:  # the stop's word to the handler thread: keep it
                self._deliveries.put(None)
                break
            dropped += 1
        if dropped:
            logger.info(
                "Dropped %d messages not yet begun from the lost channel; the broker "
                "delivers them again",
                dropped,
            )

    def _notify(self, hook: Callable[..., Any], *args: Any) -> None:
        """Call one of 1.6's notifications (on_connection_closed, ...): a handler's
        override that raises is logged, and changes nothing of what Hurricane does."""
        try:
            hook(*args)
        except Exception:
            logger.exception("%s.%s raised", self.handler_name, hook.__name__)

    def _connection_closed(self, connection: Any, reason: BaseException) -> None:
        self._channel_lost()
        self._stop_looking_at_queue()
        self._fail_waiters(
            BrokerError(
                f"the broker at {self.broker} closed the connection: "
                f"{describe_broker_error(reason)}"
            )
        )
        if not self.closing:
            self.should_reconnect = True
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(reason)
        self._notify(self.handler.on_connection_closed, connection, reason)

    def _channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self.channel:
            return
        self._channel_lost()
        # A channel the broker closes while we set up is a topology it refuses (an
        # exchange or queue declared before with other arguments): not curable by
        # reconnecting. The step that waited says so, in the one line of its failure.
        setting_up = any(not waiter.done() for waiter in self._waiters)
        during = (
            f" while {self._setup_step}"
            if self._setup_done is not None and not self._setup_done.done()
            else ""
        )
        self._fail_waiters(
            BrokerError(
                f"the broker at {self.broker} closed the channel: "
                f"{describe_broker_error(reason)}{during}",
                fatal=isinstance(reason, pika.exceptions.ChannelClosedByBroker),
            )
        )
        if not self.closing:
            if not setting_up:
                logger.warning("The broker closed the channel: %s", describe_broker_error(reason))
            self._close_connection()
        self._notify(self.handler.on_channel_closed, channel, reason)

    def _consumer_cancelled(self, frame: Any) -> None:
        self.consuming = False
        logger.warning(
            "The broker cancelled the consumer of %r (was the queue deleted?)", self.queue
        )
        self._close_connection()
        self._notify(self.handler.on_consumer_cancelled, frame)

    # -- stopping, from any thread ------------------------------------------------------------

    def close_connection(self) -> None:
        """Close the connection, as if it were lost: --reconnect connects again, else
        the consumer exits 1. Safe from any thread."""
        self._on_loop(self._close_connection)

    def close_channel(self) -> None:
        """Close the channel, and with it the connection. Safe from any thread."""

        def close() -> None:
            if self.channel is not None and self.channel.is_open:
                self.channel.close()

        self._on_loop(close)

    def reconnect(self) -> None:
        """Close the connection to have it opened again (with --reconnect)."""
        self.should_reconnect = True
        self.close_connection()

    def _on_loop(self, action: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # nothing is open
        try:
            loop.call_soon_threadsafe(action)
        except RuntimeError:  # the loop has just closed
            pass

    def request_stop(self) -> None:
        """Stop consuming for good (see the handler's ``stop()``). Safe from any thread."""
        self._stop_requested = True
        event = self._stop_event
        if event is not None:
            self._on_loop(event.set)

    def watch_for_stop(self) -> asyncio.Event:
        """The event a stop sets, on the running loop (set already if one came)."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        return self._stop_event

    def run(self) -> None:
        """Connect and consume until stopped (blocking): what the handler's ``run()``,
        django-hurricane 1.6's entry point, does."""
        if self.runner is None:
            raise RuntimeError(
                f"{self.handler_name} runs under AMQPClient(...).run() or manage.py consume"
            )
        asyncio.run(self.runner())

    def _stop_looking_at_queue(self) -> None:
        if self._look_timer is not None:
            self._look_timer.cancel()
            self._look_timer = None
        self._look_channel = None
        self.queue_messages = None

    def _close_connection(self) -> None:
        connection = self.connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            connection.close()

    def abort(self) -> None:
        """Close whatever is open, without waiting (a failed or abandoned connect).

        A connection still opening is left alone: pika 1.4, asked to close during the
        AMQP handshake, trips over its own connection workflow (AssertionErrors in
        its callbacks), while its stack_timeout ends such a connection cleanly, and
        an exiting process closes the socket anyway."""
        self.closing = True
        self.channel = None
        connection = self.connection
        if connection is not None and (connection.is_open or connection.is_closing):
            self._close_connection()

    async def shutdown(self, timeout: float) -> None:
        """Stop consuming; give back what the handler has not begun; let the message
        in hand finish (up to ``timeout`` seconds) and settle; close."""
        self.closing = True
        self._stopping.set()
        # The handler goes on with its message meanwhile: the timeout counts from now.
        deadline = time.monotonic() + timeout
        channel = self.channel
        if channel is not None and channel.is_open and self.consumer_tag:
            tag = self.consumer_tag
            cancelled = self._call(lambda done: channel.basic_cancel(tag, done))
            try:
                frame = await asyncio.wait_for(cancelled, BROKER_CLOSE_WAIT)
            except (asyncio.TimeoutError, BrokerError):
                pass
            else:
                self.consuming = False
                self._notify(self.handler.on_cancelok, frame, tag)
        returned = self._requeue_waiting()
        if returned:
            logger.info("Returned %d messages not yet begun to the queue", returned)
        thread = self._handler_thread
        if thread is not None and thread.is_alive():
            self._deliveries.put(None)
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if thread.is_alive():
                logger.warning(
                    "The handler is still working after %.1f s (--graceful-timeout); its "
                    "message goes back to the queue",
                    timeout,
                )
        self._flush()
        channel = self.channel
        if channel is not None and channel.is_open:
            channel.close()
        self._close_connection()
        if self.closed is not None and not self.closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), BROKER_CLOSE_WAIT)
            except asyncio.TimeoutError:
                logger.warning(
                    "The broker did not confirm closing the connection within %g s",
                    BROKER_CLOSE_WAIT,
                )

    def _requeue_waiting(self) -> int:
        """Hand back the messages received but not begun, so another consumer can
        take them at once (the broker would anyway, when the channel closes)."""
        returned = 0
        while True:
            try:
                item = self._deliveries.get_nowait()
            except queue.Empty:
                return returned
            if item is None:
                continue
            generation, _, method, _, _ = item
            if generation == self._generation:
                self._post(Settle("nack", method.delivery_tag, requeue=True), generation)
                returned += 1


def backoff(step: int) -> float:
    """Seconds to wait at backoff step ``step`` (1 for the first)."""
    return min(ERROR_PAUSE_MAX, ERROR_PAUSE_BASE * 2 ** min(step - 1, 16))


def describe_message(delivery: Delivery) -> str:
    """Which message, for a log line: its message_id if it has one, its routing key."""
    message_id = delivery.properties.message_id
    name = f"message {message_id!r}" if message_id else "a message without message_id"
    return f"{name} (routing key {delivery.method.routing_key!r})"


def describe_error(error: BaseException) -> str:
    """An exception on one line: its type and the first line of its message."""
    lines = str(error).splitlines()
    text = lines[0] + (" ..." if len(lines) > 1 else "") if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def describe_size(size: int) -> str:
    """A size for a log line: in bytes below 1 MiB, else in MiB."""
    if size < 1024**2:
        return f"{size:,} bytes"
    return f"{size / 1024**2:.1f} MiB".replace(".0 MiB", " MiB")


def _resolve(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)
