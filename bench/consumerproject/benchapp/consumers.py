"""The benchmark's handler: it acknowledges and times itself.

Set BENCH_MESSAGES (how many messages the run consumes) and BENCH_TIMING_FILE. The
handler notes the time (and the process's CPU time) it began the first message and
had acknowledged the last one, and writes them to the file as JSON: timing on the
handler side leaves out Django's start-up and the probe server's, which are not
consumption.
"""

import json
import os
import time

from hurricane.amqp.basehandler import TopicHandler


class AckOnlyHandler(TopicHandler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.expected = int(os.environ.get("BENCH_MESSAGES", "0"))
        self.timing_file = os.environ.get("BENCH_TIMING_FILE")
        self.count = 0
        self.first = 0.0
        self.cpu_first = 0.0

    def on_message(self, _unused_channel, basic_deliver, properties, body) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()  # every thread's, the loop's too
        self.acknowledge_message(basic_deliver.delivery_tag)
        self.count += 1
        if self.count == self.expected and self.timing_file:
            # The ack is queued for the event loop at this moment; /metrics confirms
            # afterwards that the broker got every one.
            record = {
                "first": self.first,
                "last": time.perf_counter(),
                "cpu_first": self.cpu_first,
                "cpu_last": time.process_time(),
                "count": self.count,
            }
            # Written aside and renamed: the benchmark never reads half a file.
            with open(self.timing_file + ".part", "w") as timing:
                json.dump(record, timing)
            os.replace(self.timing_file + ".part", self.timing_file)
