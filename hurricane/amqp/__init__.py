"""Hurricane's AMQP consumer: ``manage.py consume`` runs a handler class derived from
:class:`hurricane.amqp.basehandler.TopicHandler` against RabbitMQ (with pika), with
the same probes, metrics and webhooks as ``serve``.

- :mod:`.basehandler`: the handler users subclass: django-hurricane 1.6's API and hooks;
- :mod:`.engine`: the engine each handler has: the connection, the handler thread, settling;
- :mod:`.deliveries`: how often a message was delivered, and ``--max-deliveries``;
- :mod:`.bodies`: bodies over ``--max-message-size`` are never held in memory;
- :mod:`.worker`: :class:`~hurricane.amqp.worker.AMQPClient`, connect and reconnect;
- :mod:`.runtime`: the ``consume`` process (probes, signals, exit).
"""

import logging

logger = logging.getLogger("hurricane.amqp.general")
