"""Handlers the consumer tests run. Each handled message is recorded as one JSON
line in the file TEST_RECORD_FILE names: {"id", "pid", "redelivered"}.

A message body is JSON: {"id": ..., "sleep": seconds, "raise": true, "reject": true,
"requeue": true}; other keys are ignored.
"""

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
        if message.get("requeue"):
            record(message, outcome="requeued", redelivered=basic_deliver.redelivered)
            self.requeue_message(basic_deliver.delivery_tag)
            return
        record(message, outcome="acked", redelivered=basic_deliver.redelivered)
        self.acknowledge_message(basic_deliver.delivery_tag)


class AckOnlyHandler(TopicHandler):
    """Acknowledges and does nothing else (the benchmark's handler)."""

    def on_message(self, _unused_channel, basic_deliver, properties, body):
        self.acknowledge_message(basic_deliver.delivery_tag)


class NotAHandler:
    def on_message(self, *args):
        pass
