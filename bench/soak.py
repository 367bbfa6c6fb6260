"""Soak: minutes of mixed load on `manage.py serve` while faults are injected in turn.

    python bench/soak.py                          # 6 phases of 30 s, about 3.5 minutes
    python bench/soak.py --phase-seconds 10       # a quick look

Loopback only, bounded in time (phases x --phase-seconds) and in rate (--rate
requests per second at most). The benchmark project (bench/webproject) runs on a
PostgreSQL cluster of its own (tests/support/postgres_cluster.py), with its probes,
a webhook receiver of this script's and ``--max-memory``. The phases:

1. steady: load only.
2. rolling restart: a second server starts on the same listening socket (as a new
   pod behind a Service would), then the first gets SIGTERM and drains.
3. memory restart: /grow holds 10 MiB more per call until the server passes
   ``--max-memory`` and restarts in place.
4. database outage: the PostgreSQL cluster stops (fast shutdown) for a third of the
   phase, then starts again.
5. webhook outage: the receiver refuses connections, then hangs (accepts, never
   answers), while a rolling restart makes the new server send its webhooks.
6. steady again: everything must have recovered.

The load client behaves like a well-behaved HTTP client: a keep-alive connection the
server closed between two requests is retried once on a new connection (counted as
"retried"). Anything else that fails without an HTTP answer is a connection error.

The verdict: no connection error at all, no 5xx outside the database window (the
outage plus 5 s to recover), /alive 200 in every sample, and /ready non-200 at some
point of the outage. The table goes to bench/results/soak.md and stdout; the exit
code is 1 when the verdict is not met.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH / "webproject"
sys.path.insert(0, str(BENCH.parent))

from tests.support.postgres_cluster import PostgresCluster  # noqa: E402

# path -> share of the load. /db depends on the database; the rest does not.
MIX = {"/plain": 4, "/json": 2, "/db": 3, "/sleep": 1}
DB_RECOVERY_GRACE = 5.0  # seconds after the database is back during which 5xx still count as its
MAX_MEMORY_MB = 200
PROBE_INTERVAL = 0.5
REQUEST_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- what happened --------------------------------------------------------------------


@dataclass
class Outcome:
    at: float
    phase: int
    path: str
    status: int | None  # None: no HTTP answer
    seconds: float
    error: str = ""


@dataclass
class ProbeSample:
    at: float
    phase: int
    alive: str
    ready: str


@dataclass
class Journal:
    """Everything the run observed, appended from several threads (list.append is atomic)."""

    outcomes: list[Outcome] = field(default_factory=list)
    probes: list[ProbeSample] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)  # phase of each stale-connection retry
    db_windows: list[tuple[float, float]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    phase: int = 0
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f} s  phase {self.phase}: {text}"
        self.events.append(line)
        print(line, flush=True)

    def in_db_window(self, at: float) -> bool:
        return any(start <= at <= end + DB_RECOVERY_GRACE for start, end in self.db_windows)


# -- the load -------------------------------------------------------------------------


class LoadClient(threading.Thread):
    """One keep-alive connection's worth of load, paced to its share of --rate."""

    def __init__(self, port: int, rate: float, journal: Journal, stop: threading.Event, seed: int):
        super().__init__(daemon=True)
        self.port, self.interval, self.journal, self.stop = port, 1.0 / rate, journal, stop
        self.random = random.Random(seed)
        self.paths = [path for path, weight in MIX.items() for _ in range(weight)]
        self.conn: http.client.HTTPConnection | None = None
        self.used = False  # whether self.conn has carried a request already

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.request(self.random.choice(self.paths))
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up
        if self.conn is not None:
            self.conn.close()

    def request(self, path: str) -> None:
        journal = self.journal
        began = time.monotonic()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, REQUEST_TIMEOUT)
                self.used = False
            reused = self.used
            try:
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.conn.close()
                self.conn = None
                if reused and attempt == 1:
                    # The server closed a keep-alive connection between two requests
                    # (a drain does that): clients retry an idempotent request.
                    journal.retried.append(journal.phase)
                    continue
                error = type(e).__name__
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                error = type(e).__name__
            else:
                self.used = True
                if response.will_close:
                    self.conn.close()
                    self.conn = None
                journal.outcomes.append(
                    Outcome(began, journal.phase, path, response.status, time.monotonic() - began)
                )
                return
            journal.outcomes.append(
                Outcome(began, journal.phase, path, None, time.monotonic() - began, error)
            )
            return


def probe_status(port: int, path: str) -> str:
    """The probe's status code; for a failed one, with the first line of its answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip().splitlines()
        if response.status != 200 and body:
            return f"{response.status} {body[0][:80]}"
        return str(response.status)
    except TimeoutError:
        return "timeout"
    except OSError:
        return "refused"
    finally:
        conn.close()


class ProbeSampler(threading.Thread):
    """Asks /alive and /ready of the server that currently owns the app socket."""

    def __init__(self, journal: Journal, stop: threading.Event):
        super().__init__(daemon=True)
        self.journal, self.stop = journal, stop
        self.probe_port = 0

    def run(self) -> None:
        while not self.stop.wait(PROBE_INTERVAL):
            port = self.probe_port
            at = time.monotonic()
            alive, ready = probe_status(port, "/alive"), probe_status(port, "/ready")
            self.journal.probes.append(ProbeSample(at, self.journal.phase, alive, ready))


# -- the webhook receiver -------------------------------------------------------------


class WebhookReceiver:
    """Takes Hurricane's webhooks; can be down (connection refused) or hanging."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self.hanging = False
        self.release = threading.Event()  # ends a hang
        self.server: http.server.ThreadingHTTPServer | None = None
        self.up()

    def up(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hanging:
                    receiver.release.wait(60)  # until the outage ends (at most a minute)
                    return  # closes without an answer
                receiver.received += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


# -- the servers ----------------------------------------------------------------------


class Server:
    """One `manage.py serve` on the shared listening socket, with its own probe port."""

    def __init__(self, listener: socket.socket, env: dict[str, str], log: Path, webhook: str):
        self.probe_port = free_port()
        self.log_path = log
        port = listener.getsockname()[1]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve",
                "--port",
                str(port),
                "--probe-port",
                str(self.probe_port),
                "--max-memory",
                str(MAX_MEMORY_MB),
                "--webhook-url",
                webhook,
            ],
            cwd=PROJECT,
            env=dict(env, HURRICANE_INHERITED_SOCKETS=f"{port}={listener.fileno()}"),
            pass_fds=(listener.fileno(),),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"the server exited with {self.process.returncode}; see {self.log_path}"
                )
            if probe_status(self.probe_port, "/startup") == "200":
                return
            time.sleep(0.1)
        raise SystemExit(f"the server did not start in {timeout:.0f} s; see {self.log_path}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.journal = Journal()
        self.stop = threading.Event()
        self.database = PostgresCluster()
        self.webhooks = WebhookReceiver()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.listener.set_inheritable(True)
        self.port = self.listener.getsockname()[1]
        self.env = dict(os.environ, BENCH_POSTGRES_PORT=str(self.database.port), BENCH_VERBOSE="1")
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env["PYTHONPATH"] = str(PROJECT)
        self.generation = 0
        self.server: Server | None = None
        self.sampler = ProbeSampler(self.journal, self.stop)

    # -- steps ---------------------------------------------------------------------------

    def start_server(self) -> Server:
        self.generation += 1
        server = Server(
            self.listener,
            self.env,
            self.workdir / f"server-{self.generation}.log",
            self.webhooks.url,
        )
        server.wait_started()
        return server

    def rolling_restart(self) -> None:
        old = self.server
        new = self.start_server()
        self.server = new
        self.sampler.probe_port = new.probe_port
        self.journal.note(f"server {self.generation} serves; SIGTERM to the previous one")
        code = old.terminate()
        self.journal.note(f"the previous server drained and exited with {code}")

    def memory_restart(self, until: float) -> None:
        """Grow the server with /grow until it restarts in place: then the hoard it
        reports starts again from the first 10 MiB."""
        server = self.server
        held = calls = 0
        while time.monotonic() < until:
            # Grow until what is held alone passes the limit, then only ask (mib=0)
            # until the memory check (every 5 s) restarts the server.
            mib = 10 if held < MAX_MEMORY_MB else 0
            # A connection per call: the restart's drain closes idle keep-alive ones.
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            conn.request("GET", f"/grow?mib={mib}")
            now_held = int(conn.getresponse().read().split()[0])
            conn.close()
            calls += 1
            if now_held < held:
                self.journal.note(
                    f"restarted in place past --max-memory {MAX_MEMORY_MB} MB "
                    f"({held} MiB grown, {calls} calls of /grow)"
                )
                break
            held = now_held
            time.sleep(0.05 if mib else 0.25)
        else:
            raise SystemExit(f"no restart after {calls} x /grow; see {server.log_path}")

    def database_outage(self, seconds: float) -> None:
        start = time.monotonic()
        self.database.stop("fast")
        self.journal.note("database stopped")
        time.sleep(seconds)
        self.database.start()
        self.journal.db_windows.append((start, time.monotonic()))
        self.journal.note("database started again")

    def webhook_outage(self, phase_seconds: float) -> None:
        self.webhooks.down()
        self.journal.note("webhook receiver down (connection refused)")
        time.sleep(phase_seconds / 6)
        self.webhooks.release.clear()
        self.webhooks.hanging = True
        self.webhooks.up()
        self.journal.note("webhook receiver hangs (accepts, never answers)")
        self.rolling_restart()

    # -- the run ---------------------------------------------------------------------

    def run(self) -> Journal:
        args, journal = self.args, self.journal
        self.database.start()
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=PROJECT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if migrate.returncode:
            raise SystemExit(f"migrate failed:\n{migrate.stderr}")
        self.server = self.start_server()
        self.sampler.probe_port = self.server.probe_port
        self.sampler.start()
        clients = [
            LoadClient(self.port, args.rate / args.connections, journal, self.stop, seed)
            for seed in range(args.connections)
        ]
        for client in clients:
            client.start()
        phase_seconds = args.phase_seconds
        try:
            for number, (name, fault) in enumerate(PHASES, start=1):
                journal.phase = number
                ends = time.monotonic() + phase_seconds
                journal.note(name)
                time.sleep(phase_seconds / 3)
                if fault == "rolling":
                    self.rolling_restart()
                elif fault == "memory":
                    self.memory_restart(ends - 1)
                elif fault == "database":
                    self.database_outage(phase_seconds / 3)
                elif fault == "webhook":
                    self.webhook_outage(phase_seconds)
                time.sleep(max(0.0, ends - time.monotonic()))
                if fault == "webhook":
                    self.webhooks.hanging = False
                    self.webhooks.release.set()
                    self.journal.note("webhook receiver answers again")
        finally:
            self.stop.set()
            for client in clients:
                client.join(REQUEST_TIMEOUT + 1)
            self.sampler.join(3)
            if self.server is not None and self.server.process.poll() is None:
                code = self.server.terminate()
                journal.note(f"last server exited with {code}")
            journal.note(f"the webhook receiver took {self.webhooks.received} webhooks")
            self.webhooks.down()
            self.database.destroy()
        return journal


PHASES = (
    ("steady", None),
    ("rolling restart: a new server, then SIGTERM to the old one", "rolling"),
    ("memory restart past --max-memory", "memory"),
    ("database outage", "database"),
    ("webhook receiver outage, with a rolling restart", "webhook"),
    ("steady again", None),
)


# -- the report -----------------------------------------------------------------------


def probe_summary(samples: list[str]) -> str:
    counts: dict[str, int] = {}
    for answer in samples:
        code = answer.split()[0]
        counts[code] = counts.get(code, 0) + 1
    return ", ".join(f"{answer} x{n}" for answer, n in sorted(counts.items())) or "-"


def timeline(samples: list[ProbeSample]) -> str:
    """One character per probe sample: R ready, n not ready (alive), X not alive."""
    marks = []
    for sample in samples:
        if sample.alive != "200":
            marks.append("X")
        else:
            marks.append("R" if sample.ready == "200" else "n")
    return "".join(marks)


def report(journal: Journal, args: argparse.Namespace) -> tuple[str, bool]:
    lines = [
        "# Soak",
        "",
        f"`python bench/soak.py --phase-seconds {args.phase_seconds:g} --rate {args.rate:g} "
        f"--connections {args.connections}`: {len(PHASES)} phases, loopback, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}. 5xx count as the "
        f"database's from its stop until {DB_RECOVERY_GRACE:g} s after it is back.",
        "",
        "| phase | sent | 2xx | 5xx | 5xx outside the database window | connection errors "
        "| retried keep-alive | p99 ms | /alive | /ready |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    ok = True
    for number, (name, _) in enumerate(PHASES, start=1):
        outcomes = [o for o in journal.outcomes if o.phase == number]
        samples = [s for s in journal.probes if s.phase == number]
        ok_2xx = sum(1 for o in outcomes if o.status is not None and 200 <= o.status < 300)
        server_errors = [o for o in outcomes if o.status is not None and o.status >= 500]
        stray = sum(1 for o in server_errors if not journal.in_db_window(o.at))
        errors = sum(1 for o in outcomes if o.status is None)
        durations = sorted(o.seconds for o in outcomes)
        p99 = durations[int(len(durations) * 0.99) - 1] * 1000 if durations else 0.0
        retried = journal.retried.count(number)
        lines.append(
            f"| {number}. {name} | {len(outcomes):,} | {ok_2xx:,} | {len(server_errors):,} "
            f"| {stray} | {errors} | {retried} | {p99:.0f} "
            f"| {probe_summary([s.alive for s in samples])} "
            f"| {probe_summary([s.ready for s in samples])} |"
        )
        ok = ok and stray == 0 and errors == 0 and all(s.alive == "200" for s in samples)
        if any(o.status is not None and 300 <= o.status < 500 for o in outcomes):
            ok = False
    outage = [s for s in journal.probes if journal.in_db_window(s.at)]
    readiness_fell = any(s.ready != "200" for s in outage)
    ok = ok and readiness_fell
    lines += [
        "",
        "Probes over time (one mark per 0.5 s: R ready, n alive but not ready, X not alive):",
        "",
    ]
    for number in range(1, len(PHASES) + 1):
        lines.append(f"    {number}. {timeline([s for s in journal.probes if s.phase == number])}")
    reasons = sorted({s.ready for s in journal.probes if s.ready != "200"})
    reasons += sorted({s.alive for s in journal.probes if s.alive != "200"})
    if reasons:
        lines += ["", "Probe answers other than 200:", "", *(f"    {r}" for r in reasons)]
    lines += ["", "Events:", "", *(f"    {event}" for event in journal.events), ""]
    verdict = ("Verdict: **met**" if ok else "Verdict: **not met**") + (
        " (no connection error, no 5xx outside the database window, /alive 200 throughout, "
        f"/ready non-200 during the outage: {'yes' if readiness_fell else 'no'})."
    )
    lines.append(verdict)
    statuses = [o.seconds for o in journal.outcomes if o.status is not None]
    if statuses:
        lines.append(f"Median request time {statistics.median(statuses) * 1000:.1f} ms.")
    return "\n".join(lines) + "\n", ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, at most")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "soak.md")
    args = parser.parse_args()
    if args.phase_seconds < 6 or args.rate <= 0 or args.connections < 1:
        parser.error("--phase-seconds must be at least 6, --rate and --connections positive")
    with tempfile.TemporaryDirectory(prefix="hurricane-soak-") as folder:
        soak = Soak(args, Path(folder))
        try:
            journal = soak.run()
        except BaseException:
            for log in sorted(Path(folder).glob("server-*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
            raise
        text, ok = report(journal, args)
        if not ok:
            for log in sorted(Path(folder).glob("server-*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
