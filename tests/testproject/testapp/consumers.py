"""Handlers the consumer tests run. Each handled message is recorded as one JSON
line in the file TEST_RECORD_FILE names: {"id", "pid", "redelivered"}.

A message body is JSON: {"id": ..., "sleep": seconds, "raise": true, "reject": true,
"requeue": true}; other keys are ignored.
"""

import collections
import functools
import json
import os
import time

from hurricane.amqp.basehandler import TopicHandler


def record(message: dict, **extra) -> None:
    line = json.dumps({"id": message.get("id"), "pid": os.getpid(), **extra})
    with open(os.environ["TEST_RECORD_FILE"], "a") as records:
        records.write(line + "\n")


class RecordingHandler(TopicHandler):
    def on_message(self, _unused_channel, basic_deliver, properties, body):
        message = json.loads(body)
        if message.get("sleep"):
            time.sleep(message["sleep"])
        if message.get("raise"):
            record(message, outcome="raised", redelivered=basic_deliver.redelivered)
            raise RuntimeError(f"handler failed on message {message.get('id')}")
        if message.get("reject"):
            record(message, outcome="rejected", redelivered=basic_deliver.redelivered)
            self.reject_message(basic_deliver.delivery_tag)
            return
        if message.get("stop"):
            record(message, outcome="stopping", redelivered=basic_deliver.redelivered)
            self.acknowledge_message(basic_deliver.delivery_tag)
            self.stop()  # django-hurricane 1.6's way to stop from the handler
            return
        if message.get("requeue"):
            record(message, outcome="requeued", redelivered=basic_deliver.redelivered)
            self.requeue_message(basic_deliver.delivery_tag)
            return
        record(message, outcome="acked", redelivered=basic_deliver.redelivered)
        self.acknowledge_message(basic_deliver.delivery_tag)


class LegacyHooksHandler(RecordingHandler):
    """Overrides django-hurricane 1.6's pika hooks the way 1.6 handlers did; each
    hook records that it ran."""

    def __init__(self, *args):
        super().__init__(*args)
        self._prefetch_count = 3

    def setup_exchange(self, exchange_name):
        # An exchange of the handler's own type: fanout, every message reaches the
        # queue whatever its routing key.
        record({"id": f"exchange {exchange_name}"}, outcome="hook")
        callback = functools.partial(self.on_exchange_declareok, userdata=exchange_name)
        self._channel.exchange_declare(
            exchange=exchange_name, exchange_type="fanout", durable=True, callback=callback
        )

    def setup_queue(self, queue_name):
        callback = functools.partial(self.on_queue_declareok, userdata=queue_name)
        self._channel.queue_declare(
            queue=queue_name, durable=True, arguments={"x-max-length": 1000}, callback=callback
        )

    def on_bindok(self, _unused_frame, queue_name, routing_key=None):
        record({"id": f"bound {routing_key}"}, outcome="hook")
        self.set_qos()

    def stop(self):
        record({"id": "stop"}, outcome="hook")
        super().stop()

    def on_connection_closed(self, _unused_connection, reason):
        record({"id": "connection closed"}, outcome="hook")


class OwnChannelHandler(RecordingHandler):
    """Overrides a step of 1.6's plumbing that Hurricane does itself."""

    def on_channel_open(self, channel):
        self._channel = channel


class OwnAttributesHandler(RecordingHandler):
    """Keeps state of its own under names the consumer itself once kept on the handler
    (a work list ``queue``, counts ``deliveries``, ``backlog``, ``observer``, a
    ``connection``), and sets 1.6's pika attributes (``_channel``, ``_connection``,
    ``_closing``, ...) in each message, as 1.6's own methods did: none of it may
    change what the consumer does, nor may the consumer change it. Each message
    records what the handler sees of its own attributes."""

    def __init__(self, *args):
        super().__init__(*args)
        self.queue = collections.deque()
        self.deliveries = {}
        self.backlog = []
        self.observer = "the handler's own"
        self.connection = None
        self.channel = "not a channel"

    def on_message(self, _unused_channel, basic_deliver, properties, body):
        message_id = json.loads(body).get("id")
        self.queue.append(message_id)
        self.deliveries[message_id] = self.deliveries.get(message_id, 0) + 1
        self.backlog.append(message_id)
        record(
            {"id": message_id},
            outcome="own",
            queue=list(self.queue),
            deliveries=self.deliveries[message_id],
            backlog=len(self.backlog),
            observer=self.observer,
        )
        self._channel = None
        self._connection = None
        self._closing = True
        self._consuming = False
        self._consumer_tag = "mine"
        self.should_reconnect = True
        super().on_message(_unused_channel, basic_deliver, properties, body)


class AckOnlyHandler(TopicHandler):
    """Acknowledges and does nothing else (the benchmark's handler)."""

    def on_message(self, _unused_channel, basic_deliver, properties, body):
        self.acknowledge_message(basic_deliver.delivery_tag)


class NotAHandler:
    def on_message(self, *args):
        pass
