"""Interleaved A/B of two checkouts of Hurricane: ``manage.py serve`` (defaults) of
bench/webproject from each, loaded by wrk in turn, to tell whether a change costs
throughput.

    python bench/ab.py /path/to/checkout-a /path/to/checkout-b
    python bench/ab.py A B --runs 5 --duration 10 --paths /plain /json /db

Each run starts a fresh server from each checkout (the order alternates between
runs, so that a drift of the machine hits both alike), waits for its first 200,
then runs ``wrk -t2 -c64 -d<duration>s`` on each path. Prints each figure and, per
path, both medians and B/A. Needs wrk (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from servers import free_port  # bench/servers.py: port and port + 1 free


def serve(checkout: Path, port: int) -> subprocess.Popen:
    project = checkout / "bench" / "webproject"
    env = dict(os.environ, PYTHONPATH=str(checkout))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=project, env=env, check=True
    )
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/plain", timeout=1)
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit(f"the server from {checkout} did not answer within 60 s")


def requests_per_second(port: int, path: str, duration: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{duration}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=duration + 30,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--paths", nargs="+", default=["/plain", "/json"])
    args = parser.parse_args()
    figures: dict[tuple[str, str], list[float]] = {}
    for run in range(args.runs):
        order = [("A", args.a), ("B", args.b)]
        for name, checkout in order if run % 2 == 0 else order[::-1]:
            port = free_port()
            server = serve(checkout.resolve(), port)
            try:
                for path in args.paths:
                    rate = requests_per_second(port, path, args.duration)
                    figures.setdefault((name, path), []).append(rate)
                    print(f"run {run + 1} {name} {path}: {rate:,.0f} req/s", flush=True)
            finally:
                server.terminate()
                server.wait(30)
    for path in args.paths:
        a, b = figures[("A", path)], figures[("B", path)]
        ratio = statistics.median(b) / statistics.median(a)
        print(
            f"{path}: A median {statistics.median(a):,.0f}, B median {statistics.median(b):,.0f}"
            f" req/s, B/A {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
