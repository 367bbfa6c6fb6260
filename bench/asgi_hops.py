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

    python bench/asgi_hops.py --runs 3 --duration 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from servers import (
    CLOCK_TICKS,
    PROJECT,
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


def loop_thread_cpu_seconds(server: Server) -> float:
    """CPU time of the server's main thread, which runs the event loop."""
    pid = server.process.pid
    fields = proc_stat(f"/proc/{pid}/task/{pid}/stat")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    check_tools(["hurricane"])
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
