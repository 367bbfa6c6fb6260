"""What Django's thread hops cost an async view on Hurricane's ASGI path.

Evidence for the `/asleep` row of the performance targets
(bench/results/profile-asleep.md). Serves bench/webproject with `manage.py serve`
twice, taking turns, and loads `/asleep` with the benchmark's wrk settings:

- as shipped: Django's ASGI handler runs each sync piece of a request (the
  request_started receivers, each ``MiddlewareMixin`` hook, ``response.close``)
  through ``sync_to_async``, on a thread lent to the request;
- hops on the loop: an experiment, never a setting. ``sync_to_async`` calls the
  function on the event loop itself (with DJANGO_ALLOW_ASYNC_UNSAFE), which no
  server may do: a slow middleware or query would stall every connection. It shows
  what the same requests cost with no hop at all.

It prints requests per second and CPU milliseconds per request, of the whole
server and of its event-loop thread alone.

With ``--hop-latency``, it serves the shipped variant once per number of
connections instead, with each ``sync_to_async`` call timed (a wrapper loaded the
same way): how long a hop takes from the await to the function's start on its
thread, how long the function runs, and the whole hop, with the server's share of a
core. It shows where an async request's time goes when the process is far from busy.

    python bench/asgi_hops.py --runs 3 --duration 10
    python bench/asgi_hops.py --hop-latency --duration 5 --connections 2 8 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from servers import (
    CLOCK_TICKS,
    PROJECT,
    VIEW_SLEEP_SECONDS,
    Server,
    check_tools,
    compile_sources,
    migrate,
    proc_stat,
    wrk,
)

# Loaded by the interpreter at start-up (sitecustomize), before Django.
HOPS_ON_THE_LOOP = """
import os

from asgiref.sync import SyncToAsync

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"


async def call_on_the_loop(self, *args, **kwargs):
    return self.func(*args, **kwargs)


SyncToAsync.__call__ = call_on_the_loop
"""


# Loaded the same way: times every sync_to_async call, and writes the times (in
# seconds: to the start on the thread, the run, the whole hop) to HOPS_TIMES_FILE
# every half second.
TIMED_HOPS = """
import os
import threading
import time

from asgiref.sync import SyncToAsync

shipped = SyncToAsync.__call__
times = []


async def timed(self, *args, **kwargs):
    began = time.perf_counter()
    func = self.func
    marks = []

    def run(*inner_args, **inner_kwargs):
        marks.append(time.perf_counter())
        try:
            return func(*inner_args, **inner_kwargs)
        finally:
            marks.append(time.perf_counter())

    self.func = run
    try:
        return await shipped(self, *args, **kwargs)
    finally:
        self.func = func
        if len(marks) == 2:
            times.append((marks[0] - began, marks[1] - marks[0], time.perf_counter() - began))


def write():
    path = os.environ["HOPS_TIMES_FILE"]
    while True:
        time.sleep(0.5)
        rows = list(times)
        with open(path + ".new", "w") as out:
            out.writelines(f"{a} {b} {c}\\n" for a, b, c in rows)
        os.replace(path + ".new", path)


SyncToAsync.__call__ = timed
threading.Thread(target=write, daemon=True).start()
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def hop_latency(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hurricane-hops-") as folder:
        workdir = Path(folder)
        (workdir / "sitecustomize.py").write_text(TIMED_HOPS)
        times_file = workdir / "hop-times"
        compile_sources()
        migrate(workdir)
        for connections in args.connections:
            print(f"{connections} connections", file=sys.stderr, flush=True)
            env = {"PYTHONPATH": f"{workdir}:{PROJECT}", "HOPS_TIMES_FILE": str(times_file)}
            server = Server("hurricane", workdir, extra_env=env)
            try:
                server.start()
                wrk(server, "/asleep", 1, connections)  # warm-up
                time.sleep(0.6)
                skip = len(times_file.read_text().splitlines())
                load = wrk(server, "/asleep", args.duration, connections)
                time.sleep(0.6)
                lines = times_file.read_text().splitlines()[skip:]
            finally:
                server.stop()
            hops = [tuple(map(float, line.split())) for line in lines]
            to_start, running, whole = (list(column) for column in zip(*hops, strict=True))
            rows.append(
                f"| {connections} | {load.requests_per_second:,.0f} | "
                f"{connections / VIEW_SLEEP_SECONDS:,.0f} | "
                f"{load.cpu_seconds / args.duration:.2f} | {len(hops) / load.requests:.1f} | "
                f"{1000 * percentile(to_start, 0.5):.2f} / "
                f"{1000 * percentile(to_start, 0.9):.2f} | "
                f"{1000 * percentile(running, 0.5):.3f} | "
                f"{1000 * percentile(whole, 0.5):.2f} / {1000 * percentile(whole, 0.9):.2f} |"
            )
    print(f"\n/asleep, wrk -t2 -d{args.duration}s, one run per row, hop times in ms (p50 / p90):\n")
    print(
        "| connections | req/s | limit | cores used | hops per request | to the thread "
        "| the function | the whole hop |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def loop_thread_cpu_seconds(server: Server) -> float:
    """CPU time of the server's main thread, which runs the event loop."""
    pid = server.process.pid
    fields = proc_stat(f"/proc/{pid}/task/{pid}/stat")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument("--connections", type=int, nargs="+", default=[64])
    parser.add_argument(
        "--hop-latency", action="store_true", help="time each hop instead (see above)"
    )
    args = parser.parse_args()
    check_tools(["hurricane"])
    if args.hop_latency:
        hop_latency(args)
        return
    args.connections = args.connections[0]
    results: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hurricane-hops-") as folder:
        workdir = Path(folder)
        (workdir / "sitecustomize.py").write_text(HOPS_ON_THE_LOOP)
        variants = {
            "as shipped": {},
            "hops on the loop": {"PYTHONPATH": f"{workdir}:{PROJECT}"},
        }
        compile_sources()
        migrate(workdir)
        for run in range(1, args.runs + 1):
            for variant, env in variants.items():
                print(f"run {run}: {variant}", file=sys.stderr, flush=True)
                server = Server("hurricane", workdir, extra_env=env)
                try:
                    server.start()
                    loop_before = loop_thread_cpu_seconds(server)
                    load = wrk(server, "/asleep", args.duration, args.connections)
                    loop_cpu = loop_thread_cpu_seconds(server) - loop_before
                finally:
                    server.stop()
                if load.errors:
                    raise SystemExit(f"{variant}: {load.errors} errors on /asleep")
                results.setdefault(variant, []).append(
                    (
                        load.requests_per_second,
                        1000 * load.cpu_seconds / load.requests,
                        1000 * loop_cpu / load.requests,
                    )
                )
    print(f"\n/asleep, wrk -t2 -c{args.connections} -d{args.duration}s, median of {args.runs}:\n")
    print("| variant | req/s | CPU ms per request | of it, the event loop's |")
    print("|---|---:|---:|---:|")
    for variant, rows in results.items():
        rate, cpu, loop = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"| {variant} | {rate:,.0f} | {cpu:.2f} | {loop:.2f} |")


if __name__ == "__main__":
    main()
