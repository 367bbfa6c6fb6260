"""Celery benchmark: tasks per second of a prefork worker with hurricane.celery
installed against the same worker without it, in one run.

    python bench/celery.py --runs 3 --noop 5000 --sleep 1000 --concurrency 2

For every run, task kind (a no-op task, a task sleeping 10 ms) and contender (plain,
then Hurricane, interleaved so that a drift of the machine or the broker hits both
alike): a fresh queue, every message preloaded, then the worker started. Each task
counts itself in Redis (INCR, in both contenders); the run is timed from the first
task counted to the last, so neither the preloading nor the worker's start-up counts.
Each figure is the median of the runs; the ratio is Hurricane's over plain's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROJECT = BENCH / "celeryproject"
# Run as a script, this folder comes first on sys.path, and this file is named
# celery.py: Celery itself must come from site-packages.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.insert(0, str(PROJECT))

import amqp  # noqa: E402
import celery  # noqa: E402
import redis  # noqa: E402

REDIS_DB = 6
BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def delete_queue(queue: str) -> None:
    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    channel = connection.channel()
    channel.queue_delete(queue)
    channel.exchange_delete(queue)
    connection.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Whether the Hurricane worker's probes are asked while its tasks run (--no-probe-poll).
POLL_PROBES = True


class ProbePoller:
    """Asks /alive and /ready in turn every PROBE_INTERVAL s, as a kubelet would but
    more often, and keeps each answer's time (a failed or late answer counts as the
    timeout)."""

    PROBE_INTERVAL = 0.05
    TIMEOUT = 1.0

    def __init__(self, port: int) -> None:
        self.port = port
        self.times: list[float] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        import urllib.error
        import urllib.request

        paths = ("/alive", "/ready")
        asked = 0
        while not self.stop.wait(self.PROBE_INTERVAL):
            url = f"http://127.0.0.1:{self.port}{paths[asked % 2]}"
            asked += 1
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=self.TIMEOUT) as response:
                    response.read()
                answered = True
            except urllib.error.HTTPError:  # an answer all the same (a 503 while unready)
                answered = True
            except OSError:
                answered = False
            if answered:
                self.times.append(time.perf_counter() - began)
            else:
                self.failures += 1
                self.times.append(self.TIMEOUT)

    def p99_ms(self) -> float:
        if not self.times:
            return float("nan")
        ordered = sorted(self.times)
        return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def one_run(
    task: str, count: int, hurricane: bool, concurrency: int, log_dir: Path
) -> tuple[float, float, ProbePoller | None]:
    """Tasks per second of one worker over ``count`` preloaded tasks, the CPU
    microseconds per task of its main process (where hurricane.celery works), and,
    with Hurricane, its probes' answer times while the tasks ran."""
    queue = f"hurricane-bench-{uuid.uuid4().hex[:8]}"
    counter = f"hurricane-bench-counter-{queue}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(PROJECT)]),
        "BENCH_QUEUE": queue,
        "BENCH_COUNTER": counter,
        "BENCH_REDIS_DB": str(REDIS_DB),
        "BENCH_HURRICANE": "1" if hurricane else "0",
        "HURRICANE_PROBE_PORT": str(probe_port := free_port()),
    }
    os.environ["BENCH_QUEUE"] = queue
    from celery_bench import app

    app.conf.task_default_queue = queue
    store = redis.Redis(db=REDIS_DB)
    store.delete(counter)
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task(f"celery_bench.{task}", queue=queue, producer=producer)
    log = open(log_dir / f"{queue}.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "-c", str(concurrency),
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    poller = ProbePoller(probe_port) if hurricane and POLL_PROBES else None
    try:
        deadline = time.monotonic() + 600
        first = None
        while time.monotonic() < deadline:
            done = int(store.get(counter) or 0)
            now = time.perf_counter()
            if first is None and done >= 1:
                first = (now, done, cpu_seconds(worker.pid))
                if poller is not None:
                    poller.thread.start()
            if done >= count:
                assert first is not None
                cpu = (cpu_seconds(worker.pid) - first[2]) / (done - first[1]) * 1e6
                if poller is not None:
                    poller.stop.set()
                    poller.thread.join()
                return (done - first[1]) / (now - first[0]), cpu, poller
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited: see {log.name}")
            time.sleep(0.002)
        raise RuntimeError("the tasks did not finish within 600 s")
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()
        store.delete(counter)
        delete_queue(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--noop", type=int, default=5000, help="no-op tasks per run")
    parser.add_argument("--sleep", type=int, default=1000, help="10 ms tasks per run")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--no-probe-poll",
        action="store_true",
        help="do not ask the probes while the tasks run (their answers cost the worker CPU)",
    )
    args = parser.parse_args()
    global POLL_PROBES
    POLL_PROBES = not args.no_probe_poll
    kinds = [("noop", args.noop), ("sleep_10ms", args.sleep)]
    results: dict[tuple[str, bool], list[float]] = {}
    cpu: dict[tuple[str, bool], list[float]] = {}
    probes: dict[str, list[ProbePoller]] = {}
    with tempfile.TemporaryDirectory() as logs:
        for run in range(args.runs):
            for task, count in kinds:
                for hurricane in (False, True):
                    rate, micros, poller = one_run(
                        task, count, hurricane, args.concurrency, Path(logs)
                    )
                    results.setdefault((task, hurricane), []).append(rate)
                    cpu.setdefault((task, hurricane), []).append(micros)
                    if poller is not None:
                        probes.setdefault(task, []).append(poller)
                    name = "hurricane" if hurricane else "plain"
                    print(
                        f"run {run + 1} {task} {name}: {rate:,.0f} tasks/s, "
                        f"main process {micros:.0f} µs CPU/task",
                        file=sys.stderr,
                    )
    print(
        "| task | contender | tasks/s (median) | all runs (tasks/s) | hurricane / plain "
        "| main process CPU µs/task (median) |"
    )
    print("|---|---|---:|---|---:|---:|")
    for task, _ in kinds:
        plain = statistics.median(results[(task, False)])
        for hurricane in (False, True):
            rates = results[(task, hurricane)]
            median = statistics.median(rates)
            ratio = f"{median / plain:.3f}" if hurricane else "—"
            shown = ", ".join(f"{rate:,.0f}" for rate in rates)
            name = "hurricane" if hurricane else "plain"
            micros = statistics.median(cpu[(task, hurricane)])
            print(f"| {task} | {name} | {median:,.0f} | {shown} | {ratio} | {micros:.0f} |")
    print(
        "\nHurricane's probes while the tasks ran (/alive and /ready in turn every 50 ms; "
        "no answer within 1 s counts as 1 s):\n"
    )
    print("| task | asked | no answer | p99 (ms, each run) |")
    print("|---|---:|---:|---|")
    for task, pollers in probes.items():
        answers = sum(len(poller.times) for poller in pollers)
        failures = sum(poller.failures for poller in pollers)
        p99s = ", ".join(f"{poller.p99_ms():.1f}" for poller in pollers)
        print(f"| {task} | {answers} | {failures} | {p99s} |")
    print(
        f"\nMachine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Celery {celery.__version__}, prefork concurrency {args.concurrency}."
    )


if __name__ == "__main__":
    main()
