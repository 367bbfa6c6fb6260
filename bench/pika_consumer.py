"""The plain pika consumer Hurricane is measured against, written the way pika's
tutorials write one: BlockingConnection, basic_qos, basic_consume with a callback that
acks, start_consuming.

    python bench/pika_consumer.py QUEUE EXCHANGE MESSAGES PREFETCH TIMING_FILE

It declares the same topology ``manage.py consume`` declares (a topic exchange and a
queue bound with the queue's name), consumes MESSAGES messages, then writes the time
(and the CPU time) it began the first one and had acknowledged the last one to
TIMING_FILE as JSON, and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import pika


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("queue")
    parser.add_argument("exchange")
    parser.add_argument("messages", type=int)
    parser.add_argument("prefetch", type=int)
    parser.add_argument("timing_file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672)
    return parser.parse_args()


def write_timing(path: str, record: dict[str, Any]) -> None:
    # Written aside and renamed: the benchmark never reads half a file.
    with open(path + ".part", "w") as timing:
        json.dump(record, timing)
    os.replace(path + ".part", path)


def main() -> None:
    arguments = parse_arguments()
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(host=arguments.host, port=arguments.port)
    )
    channel = connection.channel()
    channel.exchange_declare(arguments.exchange, "topic")
    channel.queue_declare(arguments.queue)
    channel.queue_bind(arguments.queue, arguments.exchange, routing_key=arguments.queue)
    channel.basic_qos(prefetch_count=arguments.prefetch)

    state = {"count": 0, "first": 0.0, "last": 0.0, "cpu_first": 0.0, "cpu_last": 0.0}

    def callback(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        if state["count"] == 0:
            state["first"] = time.perf_counter()
            state["cpu_first"] = time.process_time()
        ch.basic_ack(delivery_tag=method.delivery_tag)
        state["count"] += 1
        if state["count"] == arguments.messages:
            state["last"] = time.perf_counter()
            state["cpu_last"] = time.process_time()
            ch.stop_consuming()

    channel.basic_consume(queue=arguments.queue, on_message_callback=callback)
    channel.start_consuming()
    write_timing(arguments.timing_file, state)
    connection.close()


if __name__ == "__main__":
    main()
