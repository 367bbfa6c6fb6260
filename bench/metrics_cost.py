"""What the metrics cost per app request, two checkouts compared (before and after a
change to the request path's metrics).

Two figures:

- in-process: the metric updates of one app request alone (what the server does for
  each request when metrics are on), best of 7 runs of 200,000 calls, timeit;
- whole request: ``manage.py serve`` on bench/webproject under ``wrk -t1 -c8`` for
  8 s after a 2 s warm-up, the server process's CPU time (every thread, utime + stime
  from /proc/<pid>/stat) divided by the requests wrk counted. The two checkouts run
  in turn, ``--runs`` times each, in alternating order; the run-by-run difference is
  printed with its median.

    python bench/metrics_cost.py --before /tmp/old-checkout --after . --runs 12

A checkout is a folder holding ``hurricane/`` and ``bench/webproject`` (``git archive
<commit> | tar -x -C /tmp/old-checkout``). Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

IN_PROCESS = """
import inspect, timeit
from prometheus_client import CollectorRegistry
from hurricane.metrics.exposition import HttpRequestMetrics
from hurricane.metrics.requests import RequestCounterMetric, ResponseTimeAverageMetric

metrics = HttpRequestMetrics(CollectorRegistry())
if len(inspect.signature(metrics.observe).parameters) == 4:  # before the response size

    def request():
        metrics.observe("GET", 200, "plain", 0.0021)
        RequestCounterMetric.increment()
        ResponseTimeAverageMetric.add_value(0.0021)
else:

    def request():
        metrics.observe("GET", 200, "plain", 0.0021, 1234)

print(min(timeit.repeat(request, number=200_000, repeat=7)) / 200_000 * 1e6)
"""


def in_process(tree: str) -> float:
    # Run in the checkout: ``python -c`` puts the working directory first on sys.path.
    output = subprocess.run(
        [sys.executable, "-c", IN_PROCESS],
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=tree),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(output.stdout)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout:g} s")


def wrk(url: str, duration: str) -> str:
    command = ["wrk", "-t1", "-c8", f"-d{duration}", url]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def whole_request(tree: str, port: int, path: str) -> float:
    """CPU microseconds per request of a server run from ``tree``."""
    env = dict(os.environ, PYTHONPATH=tree, DJANGO_SETTINGS_MODULE="webproject.settings")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=os.path.join(tree, "bench", "webproject"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}{path}"
        wrk(url, "2s")
        before = cpu_seconds(server.pid)
        output = wrk(url, "8s")
        spent = cpu_seconds(server.pid) - before
        requests = int(re.search(r"(\d+) requests in", output).group(1))
        return spent / requests * 1e6
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="checkout before the change")
    parser.add_argument("--after", default=".", help="checkout after the change")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--path", default="/plain")
    parser.add_argument("--port", type=int, default=18900)
    args = parser.parse_args()
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}

    for name, tree in trees.items():
        print(f"in-process, {name}: {in_process(tree):.2f} µs per request", flush=True)

    figures: dict[str, list[float]] = {name: [] for name in trees}
    port = args.port
    for run in range(args.runs):
        order = list(trees.items()) if run % 2 == 0 else list(reversed(trees.items()))
        for name, tree in order:
            port += 2
            figures[name].append(whole_request(tree, port, args.path))
            print(f"run {run + 1}, {name}: {figures[name][-1]:.1f} µs CPU", flush=True)
    if not args.runs:
        return
    for name, values in figures.items():
        shown = ", ".join(f"{value:.1f}" for value in values)
        print(f"whole request, {name}: median {statistics.median(values):.1f} µs ({shown})")
    differences = [a - b for a, b in zip(figures["after"], figures["before"], strict=True)]
    shown = ", ".join(f"{value:+.1f}" for value in differences)
    print(f"after - before, run by run: median {statistics.median(differences):+.1f} µs ({shown})")


if __name__ == "__main__":
    main()
