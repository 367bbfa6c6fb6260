"""Consumer benchmark: messages per second of ``manage.py consume`` with a handler that
only acknowledges, against a plain pika consumer with the same prefetch, in one run.

    python bench/consumer.py --messages 20000 --runs 3 --prefetch 10 100

For every run, prefetch and contender (Hurricane, then pika, interleaved so that a
drift of the machine or the broker hits both alike): declare a fresh exchange and
queue, preload every message, start the consumer process, and time it from the
first message it handles to its last acknowledgement. Only consumption is timed:
neither the preloading nor the start-up of Python, Django or the probe server.
Each figure is the median of the runs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import django
import pika
import pika.exceptions
from prometheus_client.parser import text_string_to_metric_families

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROJECT = BENCH / "consumerproject"
HANDLER = "benchapp.consumers.AckOnlyHandler"
BODY = b"x" * 100
CONTENDERS = ("hurricane", "pika")
# The Hurricane figure has to reach this share of plain pika's (the bar the project set).
REQUIRED_RATIO = 0.9
# Runs of one contender further apart than this (fastest over slowest) are flagged.
NOISY_SPREAD = 0.25


@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters(host=self.host, port=self.port))


@dataclass(frozen=True)
class Names:
    queue: str
    exchange: str


@dataclass(frozen=True)
class Trial:
    """One consumer process consuming one preloaded queue."""

    contender: str
    prefetch: int
    messages: int
    names: Names
    workdir: Path
    timeout: float
    hurricane_path: Path = ROOT

    @property
    def timing_file(self) -> Path:
        return self.workdir / f"{self.names.queue}.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.names.queue}.log"


@dataclass(frozen=True)
class Measurement:
    rate: float  # messages per second
    cpu_per_message: float  # CPU seconds per message, all the process's threads


class BenchError(Exception):
    """A run went wrong; its figure would mean nothing."""


# -- the broker ----------------------------------------------------------------------------


def declare(channel: pika.adapters.blocking_connection.BlockingChannel, names: Names) -> None:
    # Exactly what ``manage.py consume`` declares (non-durable, no arguments), or the
    # consumer's own declarations would be refused.
    channel.exchange_declare(names.exchange, "topic")
    channel.queue_declare(names.queue)
    channel.queue_bind(names.queue, names.exchange, routing_key=names.queue)


def queue_depth(broker: Broker, names: Names) -> int:
    """Messages ready in the queue (not counting those delivered and unacknowledged)."""
    with contextlib.closing(broker.connect()) as connection:
        frame = connection.channel().queue_declare(names.queue, passive=True)
        return frame.method.message_count


def preload(broker: Broker, names: Names, messages: int, timeout: float) -> None:
    """Declare the topology and publish every message before any consumer starts, so
    that consumption is timed alone and never waits for a publisher."""
    with contextlib.closing(broker.connect()) as connection:
        channel = connection.channel()
        declare(channel, names)
        for _ in range(messages):
            channel.basic_publish(names.exchange, names.queue, BODY)
    # Publishing is asynchronous on the broker's side: wait until the queue holds all.
    wait_for(lambda: queue_depth(broker, names) == messages, timeout, "the preloaded queue")


def delete_topology(broker: Broker, names: Names) -> None:
    with contextlib.closing(broker.connect()) as connection:
        channel = connection.channel()
        channel.queue_delete(names.queue)
        channel.exchange_delete(names.exchange)


def rabbitmq_version(broker: Broker) -> str:
    with contextlib.closing(broker.connect()) as connection:
        # BlockingConnection keeps what the broker said of itself on its inner connection.
        version = connection._impl.server_properties.get("version", "unknown")
    return version.decode() if isinstance(version, bytes) else str(version)


# -- processes -------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    # Hurricane's probe server listens on every interface: check the port there.
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def child_environment(trial: Trial) -> dict[str, str]:
    # Hurricane reads HURRICANE_* and AMQP_* from the environment: leave none of the
    # caller's in, so that every option comes from the command line below.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HURRICANE_", "AMQP_", "DJANGO_SETTINGS_MODULE"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(trial.hurricane_path), str(PROJECT)])
    env["BENCH_MESSAGES"] = str(trial.messages)
    env["BENCH_TIMING_FILE"] = str(trial.timing_file)
    env["BENCH_SQLITE"] = str(trial.workdir / "db.sqlite3")
    return env


@contextlib.contextmanager
def running(command: list[str], trial: Trial, cwd: Path) -> Iterator[subprocess.Popen]:
    """The process, stopped (SIGTERM, then SIGKILL) whatever happens."""
    with open(trial.log_file, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=child_environment(trial),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def read_timing(trial: Trial, process: subprocess.Popen) -> Measurement:
    """From the consumer's own timestamps of its first and last message."""

    def written() -> bool:
        if process.poll() is not None and not trial.timing_file.exists():
            raise BenchError(f"{trial.contender} exited with {process.returncode}")
        return trial.timing_file.exists()

    wait_for(written, trial.timeout, f"{trial.contender} to consume {trial.messages} messages")
    timing = json.loads(trial.timing_file.read_text())
    if timing["count"] != trial.messages:
        raise BenchError(f"{trial.contender} counted {timing['count']} messages")
    return Measurement(
        rate=trial.messages / (timing["last"] - timing["first"]),
        cpu_per_message=(timing["cpu_last"] - timing["cpu_first"]) / trial.messages,
    )


def acked_total(probe_port: int) -> float:
    url = f"http://127.0.0.1:{probe_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hurricane_amqp_messages_acked_total":
                return sample.value
    raise BenchError("/metrics has no hurricane_amqp_messages_acked_total")


def run_hurricane(trial: Trial, broker: Broker) -> Measurement:
    probe_port = free_port()
    command = [
        sys.executable,
        "manage.py",
        "consume",
        HANDLER,
        "--queue",
        trial.names.queue,
        "--exchange",
        trial.names.exchange,
        "--amqp-host",
        broker.host,
        "--amqp-port",
        str(broker.port),
        "--prefetch",
        str(trial.prefetch),
        "--probe-port",
        str(probe_port),
    ]  # probes and metrics on: they are the defaults
    with running(command, trial, PROJECT) as process:
        measurement = read_timing(trial, process)
        # The handler timed its last acknowledge_message; the figure only counts if
        # the loop then carried every ack to the broker.
        wait_for(
            lambda: acked_total(probe_port) == trial.messages,
            10,
            f"/metrics to show {trial.messages} acks",
        )
    return measurement


def run_pika(trial: Trial, broker: Broker) -> Measurement:
    command = [
        sys.executable,
        str(BENCH / "pika_consumer.py"),
        trial.names.queue,
        trial.names.exchange,
        str(trial.messages),
        str(trial.prefetch),
        str(trial.timing_file),
        "--host",
        broker.host,
        "--port",
        str(broker.port),
    ]
    with running(command, trial, BENCH) as process:
        measurement = read_timing(trial, process)
        try:
            process.wait(trial.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError("pika consumed every message but did not exit") from None
    return measurement


RUNNERS: dict[str, Callable[[Trial, Broker], Measurement]] = {
    "hurricane": run_hurricane,
    "pika": run_pika,
}


def run_trial(trial: Trial, broker: Broker) -> Measurement:
    try:
        preload(broker, trial.names, trial.messages, trial.timeout)
        measurement = RUNNERS[trial.contender](trial, broker)
        # The consumer is gone: anything unacknowledged would be back in the queue.
        left = queue_depth(broker, trial.names)
        if left:
            raise BenchError(f"{left} messages were left in the queue by {trial.contender}")
        return measurement
    except BenchError:
        if trial.log_file.exists():
            sys.stderr.write(trial.log_file.read_text(errors="replace")[-3000:])
        raise
    finally:
        # Never mask the failure being raised, if any, with one of cleaning up.
        with contextlib.suppress(pika.exceptions.AMQPError):
            delete_topology(broker, trial.names)


# -- the report ------------------------------------------------------------------------------

Results = dict[tuple[str, int], list[Measurement]]


def git(path: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(path), *arguments],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.strip()


def checkout_description(path: Path) -> str:
    """The commit of the Hurricane measured, and whether hurricane/ differs from it."""
    try:
        commit = git(path, "rev-parse", "--short", "HEAD")
        changed = git(path, "status", "--porcelain", "--", "hurricane")
    except (OSError, subprocess.SubprocessError):
        return str(path)
    return f"{path} at {commit}" + (", hurricane/ with uncommitted changes" if changed else "")


def table(results: Results, prefetches: list[int]) -> list[str]:
    lines = [
        "| contender | prefetch | msgs/s (median) | all runs (msgs/s) "
        "| CPU µs/msg (median) | hurricane / pika |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for prefetch in prefetches:
        pika_median = statistics.median(m.rate for m in results["pika", prefetch])
        for contender in CONTENDERS:
            measurements = results[contender, prefetch]
            median = statistics.median(m.rate for m in measurements)
            cpu = statistics.median(m.cpu_per_message for m in measurements) * 1e6
            runs = ", ".join(f"{m.rate:,.0f}" for m in measurements)
            ratio = f"{median / pika_median:.2f}" if contender == "hurricane" else "—"
            lines.append(
                f"| {contender} | {prefetch} | {median:,.0f} | {runs} | {cpu:.0f} | {ratio} |"
            )
    return lines


def spread(measurements: list[Measurement]) -> float:
    """How far apart the runs are: the fastest over the slowest, less one."""
    rates = [m.rate for m in measurements]
    return max(rates) / min(rates) - 1


def verdicts(results: Results, prefetches: list[int]) -> list[str]:
    lines = []
    for prefetch in prefetches:
        hurricane, plain = results["hurricane", prefetch], results["pika", prefetch]
        ratio = statistics.median(m.rate for m in hurricane) / (
            statistics.median(m.rate for m in plain)
        )
        # Each Hurricane run against the pika run right after it: what a drift of the
        # machine between runs does not touch.
        paired = ", ".join(f"{h.rate / p.rate:.2f}" for h, p in zip(hurricane, plain, strict=True))
        verdict = "reaches" if ratio >= REQUIRED_RATIO else "does NOT reach"
        lines.append(
            f"- prefetch {prefetch}: Hurricane {verdict} {REQUIRED_RATIO}x of plain pika "
            f"({ratio:.2f}x; run by run {paired})."
        )
        worst = max(spread(hurricane), spread(plain))
        if worst > NOISY_SPREAD:
            lines.append(
                f"  The runs of one contender differ by up to {worst:.0%}: the machine was "
                "not quiet; raise --runs, or run again when it is."
            )
    return lines


def report(results: Results, arguments: argparse.Namespace, broker: Broker) -> str:
    return "\n".join(
        [
            "# Consumer benchmark",
            "",
            f"{arguments.messages} preloaded messages of {len(BODY)} bytes per run, "
            f"{arguments.runs} runs, contenders interleaved; figures are medians of the runs. "
            "The handler only acknowledges. Each consumer times itself, from the moment it "
            "begins the first message to the moment it has acknowledged the last one "
            "(Hurricane: on the handler thread, after the last `acknowledge_message`, "
            "confirmed afterwards by `hurricane_amqp_messages_acked_total` on /metrics; pika: "
            "in the callback, after the last `basic_ack`). CPU is the consumer process's, "
            "all threads, over the same span. Hurricane runs with probes and metrics on.",
            "",
            *table(results, arguments.prefetch),
            "",
            *verdicts(results, arguments.prefetch),
            "",
            f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"pika {pika.__version__}, Django {django.get_version()}, "
            f"RabbitMQ {rabbitmq_version(broker)} on {broker.host}:{broker.port}. "
            f"Hurricane: {checkout_description(arguments.hurricane_path)}.",
            "",
            f"Command: `python bench/consumer.py {' '.join(sys.argv[1:])}`",
            "",
        ]
    )


# -- main --------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="messages per run")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[10], help="prefetch counts")
    parser.add_argument("--runs", type=int, default=3, help="runs per contender and prefetch")
    parser.add_argument("--amqp-host", default="127.0.0.1")
    parser.add_argument("--amqp-port", type=int, default=5672)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds any one step may take")
    parser.add_argument(
        "--hurricane-path",
        type=Path,
        default=ROOT,
        help="directory holding the hurricane package to measure (default: this checkout); "
        "to measure a change in a copy before committing it",
    )
    parser.add_argument(
        "--output", type=Path, default=BENCH / "results" / "consumer.md", help="markdown file"
    )
    arguments = parser.parse_args()
    if arguments.messages < 1 or arguments.runs < 1 or min(arguments.prefetch) < 1:
        parser.error("--messages, --runs and --prefetch must be positive")
    if not (arguments.hurricane_path / "hurricane" / "amqp").is_dir():
        parser.error(f"no hurricane package in {arguments.hurricane_path}")
    return arguments


def run_all(arguments: argparse.Namespace, broker: Broker, workdir: Path) -> Results:
    results: Results = {}
    tag = uuid.uuid4().hex[:8]  # names no other run, nor another benchmark, uses
    for run in range(1, arguments.runs + 1):
        for prefetch in arguments.prefetch:
            for contender in CONTENDERS:
                name = f"bench.{tag}.{contender}.p{prefetch}.r{run}"
                trial = Trial(
                    contender,
                    prefetch,
                    arguments.messages,
                    Names(queue=name, exchange=name),
                    workdir,
                    arguments.timeout,
                    arguments.hurricane_path.resolve(),
                )
                measurement = run_trial(trial, broker)
                results.setdefault((contender, prefetch), []).append(measurement)
                print(
                    f"run {run}, prefetch {prefetch}, {contender}: "
                    f"{measurement.rate:,.0f} msgs/s, "
                    f"{measurement.cpu_per_message * 1e6:.0f} CPU µs/msg",
                    flush=True,
                )
    return results


def main() -> int:
    arguments = parse_arguments()
    broker = Broker(arguments.amqp_host, arguments.amqp_port)
    with tempfile.TemporaryDirectory(prefix="hurricane-bench-") as workdir:
        try:
            results = run_all(arguments, broker, Path(workdir))
        except BenchError as error:
            print(f"benchmark failed: {error}", file=sys.stderr)
            return 1
        except pika.exceptions.AMQPError as error:  # pika's often say nothing but their class
            print(f"benchmark failed: the broker: {error!r}", file=sys.stderr)
            return 1
    text = report(results, arguments, broker)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(text)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
