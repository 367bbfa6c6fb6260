"""Hurricane's AMQP consumer: ``manage.py consume`` runs a handler class derived from
:class:`hurricane.amqp.basehandler.TopicHandler` against RabbitMQ (with pika), with
the same probes, metrics and webhooks as ``serve``.

- :mod:`.basehandler`: the handler users subclass, and the connection that feeds it;
- :mod:`.deliveries`: how often a message was delivered, and ``--max-deliveries``;
- :mod:`.bodies`: bodies over ``--max-message-size`` are never held in memory;
- :mod:`.worker`: :class:`~hurricane.amqp.worker.AMQPClient`, connect and reconnect;
- :mod:`.runtime`: the ``consume`` process (probes, signals, exit).
"""

import logging

logger = logging.getLogger("hurricane.amqp.general")
