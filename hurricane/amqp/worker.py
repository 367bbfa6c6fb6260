"""The AMQP client: connects a handler to the broker and, with ``reconnect``,
connects it again after a loss, with capped, jittered backoff.

Users who start a consumer themselves::

    from hurricane.amqp.worker import AMQPClient

    AMQPClient(MyHandler, "my.queue", "my.exchange", "127.0.0.1", 5672, "/").run(reconnect=True)

``run()`` blocks until SIGTERM or SIGINT (when called in the main thread) and
raises :class:`~hurricane.amqp.basehandler.BrokerError` when it cannot go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import threading
from typing import Any

from hurricane.amqp import logger
from hurricane.amqp.basehandler import _AMQPConsumer, configure_handler
from hurricane.amqp.engine import BrokerError, ConsumerObserver, describe_broker_error

# Reconnect delays: doubling from the base up to the cap, each drawn at random from
# its upper half, so that a fleet of consumers does not reconnect in lockstep.
RECONNECT_BASE_DELAY = 0.5
RECONNECT_MAX_DELAY = 30.0


def reconnect_delay(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 for the first)."""
    ceiling = min(RECONNECT_MAX_DELAY, RECONNECT_BASE_DELAY * 2 ** min(attempt, 16))
    return random.uniform(ceiling / 2, ceiling)


def broker_credentials() -> tuple[str | None, str | None]:
    """AMQP_USER and AMQP_PASSWORD: the Django setting, else the environment."""
    from django.conf import settings

    from hurricane.config.options import AMQP_CREDENTIAL_OPTIONS, resolve_values

    values = resolve_values(AMQP_CREDENTIAL_OPTIONS, {}, settings).values
    return values["amqp_user"], values["amqp_password"]


class AMQPClient:
    """Runs one handler class against one queue; see the module's documentation."""

    def __init__(
        self,
        consumer_klass: type[_AMQPConsumer],
        queue_name: str | None,
        exchange_name: str,
        amqp_host: str,
        amqp_port: int,
        amqp_vhost: str | None = None,
        *,
        amqp_user: str | None = None,
        amqp_password: str | None = None,
        graceful_timeout: float = 30.0,
        observer: ConsumerObserver | None = None,
        **consumer_settings: Any,
    ) -> None:
        if not (isinstance(consumer_klass, type) and issubclass(consumer_klass, _AMQPConsumer)):
            raise TypeError(
                f"{consumer_klass!r} is not a subclass of hurricane.amqp.basehandler.TopicHandler"
            )
        if amqp_user is None and amqp_password is None:
            amqp_user, amqp_password = broker_credentials()
        self.consumer = consumer_klass(
            queue_name, exchange_name, amqp_host, amqp_port, amqp_vhost, amqp_user, amqp_password
        )
        # The handler's engine: what connects, consumes and settles.
        self.engine = configure_handler(self.consumer, **consumer_settings)
        self.observer = observer or ConsumerObserver()
        self.engine.observer = self.observer
        # The handler's run() (which this client's run() calls, as in 1.6) runs main().
        self.engine.runner = lambda: self.main(self._reconnect)
        self.graceful_timeout = graceful_timeout
        self.reconnects = 0
        self._reconnect: bool = False
        self._stop: asyncio.Event | None = None

    @property
    def _consumer(self) -> _AMQPConsumer:
        """django-hurricane 1.6's name of :attr:`consumer`."""
        return self.consumer

    def run(self, reconnect: bool = False) -> None:
        """Consume until SIGTERM/SIGINT; with ``reconnect``, survive broker outages.
        Runs the consumer's ``run()``, as django-hurricane 1.6 did."""
        self._reconnect = reconnect
        try:
            self.consumer.run()
        except KeyboardInterrupt:
            self.consumer.stop()

    async def main(self, reconnect: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.request_stop)
        await self.consume(reconnect)

    def request_stop(self) -> None:
        """Stop consuming and close (on the event loop): the handler's ``stop()``
        is called, and the consumer stops whatever it does."""
        consumer = self.consumer
        try:
            consumer.stop()
        except Exception:
            logger.exception("%s.stop() raised", type(consumer).__name__)
        self.engine.request_stop()

    async def consume(self, reconnect: bool) -> None:
        """Connect and consume until a stop is requested. Raises BrokerError when the
        broker cannot be reached or is lost and ``reconnect`` is off, or when reconnecting
        cannot help (bad credentials, unknown vhost, a refused topology)."""
        engine = self.engine
        stop = self._stop = engine.watch_for_stop()
        if stop.is_set():
            return
        attempt = 0
        while True:
            try:
                if not await self._until_stopped(engine.connect(), stop):
                    engine.abort()
                    return
            except BrokerError as error:
                if error.fatal or not reconnect:
                    raise
                if await self._wait_to_reconnect(str(error), attempt, stop):
                    return
                attempt += 1
                continue
            attempt = 0
            self.observer.connection_changed(True)
            closed = engine.closed
            assert closed is not None  # connect() made it before it returned
            if not await self._until_stopped(asyncio.shield(closed), stop):
                await engine.shutdown(self.graceful_timeout)
                return
            reason = (
                f"lost the connection to the broker at {engine.broker}: "
                f"{describe_broker_error(closed.result())}"
            )
            self.observer.connection_changed(False, reason)
            if not reconnect:
                raise BrokerError(f"{reason}; not reconnecting (--reconnect is off)")
            self.reconnects += 1
            if await self._wait_to_reconnect(reason, attempt, stop):
                return
            attempt += 1

    async def _until_stopped(self, awaitable: Any, stop_event: asyncio.Event) -> bool:
        """Await ``awaitable`` unless ``stop_event`` is set first; False if it was."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(stop_event.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            task.result()  # raises what the work raised
            return True
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return False

    async def _wait_to_reconnect(self, reason: str, attempt: int, stop: asyncio.Event) -> bool:
        """Log and sleep before the next attempt; True if ``stop`` was set meanwhile."""
        delay = reconnect_delay(attempt)
        logger.warning("%s; connecting again in %.1f s", reason, delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            return False
        return True
