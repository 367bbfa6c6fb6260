"""What the same Python work costs when threads block between pieces of it.

Evidence for the `/sleep` row of the performance targets (bench/results/profile-sleep.md):
each thread runs one fixed piece of work (JSON-encoding a 20-key object 20 times,
about a Django request's worth of interpreter work) in a loop, either back to back or
after a blocking ``time.sleep``, as a view waiting on an upstream call does. It prints
the CPU time one piece costs in each case. No server, no sockets: only CPython
threads, the GIL and the CPU's caches.

    python bench/thread_wakeup.py
"""

from __future__ import annotations

import argparse
import json
import threading
import time

PAYLOAD = {f"key{i}": i for i in range(20)}


def one_piece() -> None:
    for _ in range(20):
        json.dumps(PAYLOAD)


def measure(threads: int, sleep: float, seconds: float) -> tuple[float, float]:
    """Pieces per second and CPU microseconds per piece."""
    done = [0] * threads
    deadline = time.monotonic() + seconds

    def run(index: int) -> None:
        while time.monotonic() < deadline:
            if sleep:
                time.sleep(sleep)
            one_piece()
            done[index] += 1

    cpu_before = time.process_time()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = time.process_time() - cpu_before
    pieces = sum(done)
    return pieces / seconds, cpu / pieces * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per case")
    args = parser.parse_args()
    cases = [(1, 0.0), (6, 0.0), (64, 0.0), (1, 0.05), (16, 0.05), (64, 0.05)]
    print("| threads | between pieces | pieces/s | CPU µs per piece |")
    print("|---:|---|---:|---:|")
    for threads, sleep in cases:
        rate, cpu = measure(threads, sleep, args.seconds)
        between = f"time.sleep({sleep})" if sleep else "nothing"
        print(f"| {threads} | {between} | {rate:,.0f} | {cpu:.0f} |", flush=True)


if __name__ == "__main__":
    main()
