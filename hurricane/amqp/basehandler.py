"""The handler users subclass: django-hurricane 1.6's API and hooks.

A handler implements ``on_message`` and settles each message with
:meth:`~_AMQPConsumer.acknowledge_message` (or ``reject_message`` /
``requeue_message``)::

    from hurricane.amqp.basehandler import TopicHandler

    class MyHandler(TopicHandler):
        def on_message(self, _unused_channel, basic_deliver, properties, body):
            print(body.decode("utf-8"))
            self.acknowledge_message(basic_deliver.delivery_tag)

The work is done by a :class:`~hurricane.amqp.engine.ConsumerEngine` (the broker
connection, the handler thread, settling, stopping), which each handler reaches
through one attribute, ``_hurricane_engine``, and which keeps all its state itself:
attributes a handler sets on itself (``self.connection``, ``self._channel``,
``self._closing``, ...) are the handler's own and change nothing in what the engine
does. The handler keeps 1.6's hooks, which the engine calls, so that overriding them
works as in 1.6; the engine state 1.6 handlers read (``self._channel`` in an
override of ``setup_queue``, ``self.queue``, ...) can be read on the handler as
before, and a handler's assignment to one of those names only hides the engine's
value from the handler itself.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pika

from hurricane.amqp.engine import (
    BROKER_CLOSE_WAIT,
    BROKER_STEP_TIMEOUT,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PREFETCH,
    BrokerError,
    ConsumerEngine,
    ConsumerObserver,
    ThreadSafeChannel,
    describe_broker_error,
)

# Kept importable from here, where they were first.
__all__ = [
    "BROKER_CLOSE_WAIT",
    "BROKER_STEP_TIMEOUT",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PREFETCH",
    "REPLACED_HOOKS",
    "BrokerError",
    "ConsumerObserver",
    "ThreadSafeChannel",
    "TopicHandler",
    "configure_handler",
    "describe_broker_error",
    "engine_of",
    "overrides",
    "setup_problem",
]

# The one attribute through which a handler reaches its engine.
ENGINE_ATTRIBUTE = "_hurricane_engine"

# Methods of django-hurricane 1.6's consumer that were steps of its pika plumbing,
# which Hurricane's consumer does itself: a handler that overrides one is refused at
# start, with what takes its place. (The declaration chain from setup_exchange to
# start_consuming, the notifications on_connection_closed, on_channel_closed,
# on_consumer_cancelled and on_cancelok, and stop() are called as in 1.6.)
AT_START = "override start_consuming() (calling super()) to act once consuming"
REPLACED_HOOKS = {
    "connect": "the connection comes from --amqp-host, --amqp-port, --amqp-vhost, "
    "AMQP_USER, AMQP_PASSWORD and --amqp-heartbeat",
    "run": "AMQPClient(...).run() and manage.py consume run the handler",
    "on_connection_open": AT_START,
    "open_channel": AT_START,
    "on_channel_open": AT_START,
    "on_connection_open_error": "a failed connect is logged, and retried with --reconnect",
    "add_on_channel_close_callback": "override on_channel_closed() to be told",
    "add_on_cancel_callback": "override on_consumer_cancelled() to be told",
    "close_connection": "override stop() (calling super()) to act when the consumer stops",
    "close_channel": "override stop() (calling super()) to act when the consumer stops",
    "stop_consuming": "override stop() (calling super()) to act when the consumer stops",
    "reconnect": "override on_connection_closed() to be told of a lost connection; "
    "--reconnect connects again",
}


def overrides(handler_class: type, name: str) -> bool:
    """Whether the handler (or a class of it below Hurricane's) defines ``name``."""
    return any(
        name in vars(klass)
        for klass in handler_class.__mro__
        if issubclass(klass, _AMQPConsumer) and klass not in (_AMQPConsumer, TopicHandler)
    )


def setup_problem(
    handler_class: type,
    queue_name: str | None,
    queue_type: str = "classic",
    dead_letter_exchange: str | None = None,
) -> str | None:
    """Why ``handler_class`` cannot consume with these settings, in one line, or None."""
    for name, instead in REPLACED_HOOKS.items():
        if overrides(handler_class, name):
            return (
                f"{handler_class.__name__} overrides {name}(), a step of django-hurricane "
                f"1.6's pika plumbing that Hurricane's consumer does itself: {instead}"
            )
    if overrides(handler_class, "setup_queue"):
        # Its declaration is the handler's: the broker cannot be asked to check it
        # against ours (it would refuse the handler's own arguments as different).
        option = (
            f"--queue-type {queue_type}"
            if queue_type != "classic"
            else "--dead-letter-exchange"
            if dead_letter_exchange
            else None
        )
        if option:
            return (
                f"{option} cannot apply: {handler_class.__name__} overrides setup_queue() "
                f"and declares the queue itself (drop the override, or {option.split()[0]} "
                "and declare what it sets in setup_queue())"
            )
    if not queue_name:
        # The broker names the queue, exclusive to the connection: the one queue type
        # that cannot be quorum, and no name to route its dead letters by.
        if queue_type != "classic":
            return f"--queue-type {queue_type} needs --queue (a queue the broker names is classic)"
        if dead_letter_exchange:
            return "--dead-letter-exchange needs --queue (its dead letters are routed by name)"
    return None


class _EngineState:
    """A name on the handler that reads the engine's attribute ``attribute``
    (``self._channel`` in a 1.6 override, ``self.queue``). Assigning the name on a
    handler stores the handler's own value, which hides the engine's from the
    handler and leaves the engine as it was."""

    def __init__(self, attribute: str, doc: str) -> None:
        self.attribute = attribute
        self.__doc__ = doc

    def __get__(self, handler: Any, owner: type | None = None) -> Any:
        if handler is None:
            return self
        return getattr(engine_of(handler), self.attribute)


class _AMQPConsumer:
    """Hurricane's base consumer, django-hurricane 1.6's API: implement
    :meth:`on_message`; override the hooks to take part in the declaration chain or
    to be told of what happens. The engine that does the work is
    ``hurricane.amqp.engine``'s; connecting again after a loss is
    :class:`hurricane.amqp.worker.AMQPClient`'s business."""

    EXCHANGE_TYPE: str | None = None

    def __init__(
        self,
        queue_name: str | None,
        exchange_name: str,
        host: str = "127.0.0.1",
        port: int = 5672,
        vhost: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._hurricane_engine = ConsumerEngine(
            self, queue_name, exchange_name, host, port, vhost, username, password
        )

    # -- the engine's state, to read (1.6's names, then Hurricane's) ---------------------------

    _queue_name = _EngineState("queue_name", "The queue given (--queue), or ''.")
    _exchange_name = _EngineState("exchange_name", "The exchange (--exchange).")
    _host = _EngineState("host", "The broker's host.")
    _port = _EngineState("port", "The broker's port.")
    _vhost = _EngineState("vhost", "The broker's virtual host.")
    _username = _EngineState("username", "AMQP_USER, if given.")
    _password = _EngineState("password", "AMQP_PASSWORD, if given.")
    _connection = _EngineState("connection", "The pika connection (event loop only).")
    _channel = _EngineState("channel", "The pika channel (event loop only).")
    _consumer_tag = _EngineState("consumer_tag", "The tag of the consumer on the channel.")
    _consuming = _EngineState("consuming", "Whether the channel consumes.")
    _closing = _EngineState("closing", "Whether the consumer is closing for good.")
    was_consuming = _EngineState("was_consuming", "Whether a connection consumed.")
    should_reconnect = _EngineState("should_reconnect", "Whether the connection was lost.")
    queue = _EngineState(
        "queue", "The queue consumed: --queue, or the name the broker gave it (amq.gen-...)."
    )
    routing_key = _EngineState("routing_key", "--routing-key, if given.")
    prefetch = _EngineState("prefetch", "The prefetch count (--prefetch).")
    durable = _EngineState("durable", "Whether exchange and queue are durable.")
    queue_type = _EngineState("queue_type", "--queue-type.")
    dead_letter_exchange = _EngineState("dead_letter_exchange", "--dead-letter-exchange.")
    dead_letter_queue = _EngineState("dead_letter_queue", "--dead-letter-queue.")
    requeue_on_error = _EngineState("requeue_on_error", "--requeue-on-error.")
    heartbeat = _EngineState("heartbeat", "--amqp-heartbeat, if given.")
    max_deliveries = _EngineState("max_deliveries", "--max-deliveries.")
    max_message_size = _EngineState("max_message_size", "--max-message-size.")
    broker = _EngineState("broker", "Where the broker is, for messages: host:port/vhost.")
    backlog = _EngineState("backlog", "Messages received and waiting for the handler thread.")

    # django-hurricane 1.6's name of the prefetch count: a handler set it in __init__
    # (or as a class attribute, which replaces this property).
    @property
    def _prefetch_count(self) -> int:
        return engine_of(self).prefetch

    @_prefetch_count.setter
    def _prefetch_count(self, value: int) -> None:
        engine = vars(self).get(ENGINE_ATTRIBUTE)
        if engine is None:
            return  # before super().__init__(), which sets the default, as 1.6's did
        engine.prefetch = engine.handler_prefetch = value

    # -- what users implement and call ------------------------------------------------------

    def on_message(
        self,
        _unused_channel: Any,
        basic_deliver: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        """Handle one message; runs on the handler thread. Settle it with
        ``acknowledge_message``, ``reject_message`` or ``requeue_message``."""
        raise NotImplementedError("The on_message method must be implemented by a handler class")

    def get_routing_keys(self, queue_name: str) -> list[str]:
        """The routing keys binding the queue to the exchange: ``--routing-key`` if
        given, else the queue's name."""
        return [self.routing_key or queue_name]

    def acknowledge_message(self, delivery_tag: int) -> None:
        """The message is done: the broker forgets it."""
        self._hurricane_engine.settle(delivery_tag, "ack")

    def reject_message(self, delivery_tag: int, requeue: bool = False) -> None:
        """The message cannot be handled: the broker dead-letters it where a
        dead-letter exchange is set up, else drops it; with ``requeue``, it is
        delivered again."""
        self._hurricane_engine.settle(delivery_tag, "nack", requeue=requeue)

    def requeue_message(self, delivery_tag: int) -> None:
        """Put the message back in the queue, to be delivered again."""
        self._hurricane_engine.settle(delivery_tag, "nack", requeue=True)

    def publish_message(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish on the consumer's channel; safe from the handler thread."""
        self._hurricane_engine.publish(exchange, routing_key, body, properties, mandatory)

    # -- django-hurricane 1.6's declaration chain ---------------------------------------------
    # Each step is a pika call whose callback starts the next one, as in 1.6, so that a
    # handler's override of a step takes effect (it starts the next step itself, as
    # there). They run on the event loop; the engine starts the chain with
    # setup_exchange() and waits for start_consuming() to consume.

    def setup_exchange(self, exchange_name: str) -> None:
        """Declare the exchange (``EXCHANGE_TYPE``, durable with --durable); then
        :meth:`on_exchange_declareok`."""
        engine_of(self).declare_exchange(
            exchange_name,
            self.EXCHANGE_TYPE,
            functools.partial(self.on_exchange_declareok, userdata=exchange_name),
        )

    def on_exchange_declareok(self, _unused_frame: Any, userdata: str) -> None:
        self.setup_queue(engine_of(self).queue_name)

    def setup_queue(self, queue_name: str) -> None:
        """Declare the queue with :meth:`queue_arguments` (durable with --durable; named
        by the broker and exclusive to the connection without --queue); then
        :meth:`on_queue_declareok`."""
        engine_of(self).declare_queue(
            queue_name,
            self.queue_arguments(),
            functools.partial(self.on_queue_declareok, userdata=queue_name),
        )

    def queue_arguments(self) -> dict[str, Any]:
        """The arguments the queue is declared with: its type unless classic, and its
        dead-letter exchange (--queue-type, --dead-letter-exchange)."""
        return engine_of(self).queue_arguments()

    def on_queue_declareok(self, frame: Any, userdata: str) -> None:
        """Bind the queue to the exchange with each of :meth:`get_routing_keys`; then
        :meth:`on_bindok` for each binding."""
        engine = engine_of(self)
        queue_name = engine.queue = frame.method.queue
        keys = self.get_routing_keys(queue_name) or [queue_name]
        engine.bind_queue(
            queue_name,
            list(keys),
            lambda key: functools.partial(self.on_bindok, queue_name=queue_name, routing_key=key),
        )

    def on_bindok(
        self, _unused_frame: Any, queue_name: str, routing_key: str | None = None
    ) -> None:
        """A binding is in place; once all are, :meth:`set_qos`."""
        if engine_of(self).binding_done():
            self.set_qos()

    def set_qos(self) -> None:
        """Set the prefetch count (--prefetch); then :meth:`on_basic_qos_ok`."""
        engine_of(self).set_qos(self.on_basic_qos_ok)

    def on_basic_qos_ok(self, _unused_frame: Any) -> None:
        self.start_consuming()

    def start_consuming(self) -> None:
        """Start consuming the queue (once per channel, however often it is called)."""
        engine_of(self).start_consuming()

    # django-hurricane 1.6's notifications: the engine has done what is needed when
    # they are called; override them to be told.

    def on_connection_closed(self, _unused_connection: Any, reason: BaseException) -> None:
        """The connection closed (a loss, or a stop); --reconnect connects again."""

    def on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        """The channel closed; the connection is closed with it."""

    def on_consumer_cancelled(self, method_frame: Any) -> None:
        """The broker cancelled the consumer (its queue was deleted, say)."""

    def on_cancelok(self, _unused_frame: Any, userdata: str | None) -> None:
        """The broker confirmed the cancel of a stop (``userdata``: the consumer tag)."""

    # -- stopping, from any thread ------------------------------------------------------------

    def stop(self) -> None:
        """Stop consuming for good: no more messages come, the message in hand
        finishes (up to --graceful-timeout), the connection closes and ``run()``
        returns. Safe from any thread, on_message included. Called when the consumer
        stops (a signal, KeyboardInterrupt): override it, calling super(), to act then."""
        engine_of(self).request_stop()

    def stop_consuming(self) -> None:
        """django-hurricane 1.6's first step of a stop: here, the whole stop."""
        engine_of(self).request_stop()

    def close_connection(self) -> None:
        """Close the connection, as if it were lost: --reconnect connects again, else
        the consumer exits 1. Safe from any thread."""
        engine_of(self).close_connection()

    def close_channel(self) -> None:
        """Close the channel, and with it the connection (see close_connection)."""
        engine_of(self).close_channel()

    def reconnect(self) -> None:
        """Close the connection to have it opened again (with --reconnect)."""
        engine_of(self).reconnect()

    def run(self) -> None:
        """Connect and consume until stopped (blocking): django-hurricane 1.6's entry
        point, which ``AMQPClient(...).run()`` calls."""
        engine_of(self).run()


def engine_of(handler: _AMQPConsumer) -> ConsumerEngine:
    """The engine of ``handler``."""
    try:
        engine: ConsumerEngine = vars(handler)[ENGINE_ATTRIBUTE]
    except KeyError:
        raise TypeError(
            f"{type(handler).__name__}.__init__ must call super().__init__(queue_name, "
            "exchange_name, ...): it makes the handler's consumer engine"
        ) from None
    return engine


_PREFETCH_PROPERTY = inspect.getattr_static(_AMQPConsumer, "_prefetch_count")


def configure_handler(
    handler: _AMQPConsumer,
    *,
    prefetch: int | None = None,
    queue_type: str = "classic",
    dead_letter_exchange: str | None = None,
    **settings: Any,
) -> ConsumerEngine:
    """Give the handler's engine the settings beyond the original constructor's (the
    consume options, :meth:`ConsumerEngine.configure`); returns the engine.
    ``prefetch`` None keeps the handler's ``_prefetch_count`` (1.6's way to set it),
    else the default. Raises ValueError when the handler cannot consume so."""
    engine = engine_of(handler)
    handler_class = type(handler)
    problem = setup_problem(handler_class, engine.queue_name, queue_type, dead_letter_exchange)
    if problem:
        raise ValueError(problem)
    # A class attribute of the handler replaces the property.
    class_prefetch = inspect.getattr_static(handler_class, "_prefetch_count") is not (
        _PREFETCH_PROPERTY
    )
    if class_prefetch:
        engine.handler_prefetch = handler._prefetch_count
    engine.configure(
        prefetch=prefetch,
        queue_type=queue_type,
        dead_letter_exchange=dead_letter_exchange,
        handler_declares_queue=overrides(handler_class, "setup_queue"),
        **settings,
    )
    if class_prefetch:
        # What 1.6's set_qos overrides read.
        handler._prefetch_count = engine.prefetch
    return engine


class TopicHandler(_AMQPConsumer):
    """A consumer on a *topic* exchange: subclass it and implement ``on_message``."""

    EXCHANGE_TYPE = "topic"
