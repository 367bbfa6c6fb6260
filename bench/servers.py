"""HTTP benchmark: Hurricane against its peers serving one Django project.

    python bench/servers.py                       every server, every path, 3 runs
    python bench/servers.py --runs 1 --duration 5 --servers hurricane gunicorn --paths /plain

For each run, each server in turn (interleaved, so that a drift of the machine hits
all alike) is started fresh on bench/webproject, timed to its first 200, then loaded
by wrk (-t2 -c64 --latency) on every path; while it runs, the server's processes are
sampled for CPU time and memory, and for Hurricane the probes are polled. Each cell
is the median of the runs. The table is printed and written to bench/results/http.md.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROJECT = BENCH / "webproject"
CACHE = ROOT / ".cache" / "bench"
ORIGINAL_VERSION = "1.6.2"
PATHS = ("/plain", "/json", "/db", "/sleep", "/asleep")
# The time /sleep and /asleep in bench/webproject spend waiting, per request.
VIEW_SLEEP_SECONDS = 0.05
SERVERS = ("hurricane", "hurricane-2p", "gunicorn", "granian", "uvicorn", "original")
PEER_PACKAGES = ("gunicorn", "granian", "uvicorn")
# Not run by default: Hurricane on asyncio's own event loop (`serve --loop asyncio`),
# to measure what uvloop, the default, makes of each path.
HURRICANE_ON_ASYNCIO = "hurricane-asyncio"
# Also only when named: the same project served on the WSGI path (HURRICANE_ASGI=false),
# and behind a Django Channels router, as a project that adds WebSockets writes its
# ASGI application (bench/webproject/webproject/channels_asgi.py): what sync views
# under ASGI cost against the WSGI path.
HURRICANE_WSGI = "hurricane-wsgi"
HURRICANE_CHANNELS = "hurricane-channels"
# And `serve --async-views pool`, in one process and in two: async views in the
# worker pool, their coroutines on the loop.
HURRICANE_POOL = "hurricane-pool"
HURRICANE_2P_POOL = "hurricane-2p-pool"
OPTIONAL = (
    HURRICANE_ON_ASYNCIO,
    HURRICANE_WSGI,
    HURRICANE_CHANNELS,
    HURRICANE_POOL,
    HURRICANE_2P_POOL,
)
# Command-line arguments each of Hurricane's variants adds to `manage.py serve`.
VARIANT_ARGS = {
    "hurricane-2p": ["--processes", "2"],
    HURRICANE_ON_ASYNCIO: ["--loop", "asyncio"],
    HURRICANE_POOL: ["--async-views", "pool"],
    HURRICANE_2P_POOL: ["--processes", "2", "--async-views", "pool"],
}
# The environment each of Hurricane's variants adds to the project's.
VARIANT_ENV = {
    HURRICANE_WSGI: {"HURRICANE_ASGI": "false"},
    HURRICANE_CHANNELS: {"BENCH_ASGI_APPLICATION": "webproject.channels_asgi.application"},
}
VARIANT_TEXT = {
    HURRICANE_ON_ASYNCIO: "`serve --loop asyncio`",
    HURRICANE_WSGI: "the WSGI path (`HURRICANE_ASGI=false`)",
    HURRICANE_CHANNELS: "behind a Channels `ProtocolTypeRouter`",
    HURRICANE_POOL: "`serve --async-views pool`",
    HURRICANE_2P_POOL: "`serve --processes 2 --async-views pool`",
}
OURS = ("hurricane", "hurricane-2p", *OPTIONAL)
PROBED = (*OURS, "original")
STARTUP_POLL = 0.005  # seconds between polls for the first 200
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A port free on every interface whose next port is free too: Hurricane's probe
    server takes the app port + 1 (on 0.0.0.0). The kernel's free port alone is from
    the ephemeral range, where wrk's own connections may hold the next one: a run
    once stopped with "port 38368 (--probe-port) is already in use"."""
    while True:
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", 0))
            port = sock.getsockname()[1]
            with socket.socket() as following:
                try:
                    following.bind(("0.0.0.0", port + 1))
                except OSError:
                    continue
            return port


def original_python() -> Path:
    """The original django-hurricane in a virtual environment of its own (it has the
    same import name as Hurricane), made on first use."""
    venv = CACHE / f"django-hurricane-{ORIGINAL_VERSION}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "--quiet",
                f"django-hurricane=={ORIGINAL_VERSION}",
            ],
            check=True,
        )
    return python


# The peers as commonly started, nothing tuned; {port} is filled in.
PEER_ARGUMENTS = {
    "gunicorn": "-k gthread -w 2 --threads 8 -b 127.0.0.1:{port} --log-level warning "
    "webproject.wsgi",
    "granian": "--interface wsgi --workers 2 --host 127.0.0.1 --port {port} "
    "--log-level warning webproject.wsgi:application",
    "uvicorn": "--workers 2 --host 127.0.0.1 --port {port} --log-level warning "
    "webproject.asgi:application",
}


def command(server: str, port: int) -> list[str]:
    """How each server is started: Hurricane and the original with their defaults."""
    if server in OURS:
        arguments = VARIANT_ARGS.get(server, [])
        return [sys.executable, "manage.py", "serve", *arguments, "--port", str(port)]
    if server == "original":
        return [str(original_python()), "manage.py", "serve", "--port", str(port)]
    arguments = PEER_ARGUMENTS[server].format(port=port).split()
    return [sys.executable, "-m", server, *arguments]


def project_environment(workdir: Path) -> dict[str, str]:
    """The environment every server and the migration run with: the benchmark
    project on the import path, its SQLite database in the run's folder."""
    env = dict(os.environ, BENCH_DATABASE=str(workdir / "bench.sqlite3"))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = str(PROJECT)
    return env


# -- the server's processes ------------------------------------------------------------


def proc_stat(path: str) -> list[str]:
    """The fields of a /proc stat file after the command name, which may hold spaces
    and brackets: index 1 is the parent's pid, 11 and 12 user and system CPU ticks."""
    return Path(path).read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parent = int(proc_stat(f"/proc/{entry}/stat")[1])
                children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes, and of their reaped children."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = proc_stat(f"/proc/{pid}/stat")
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


def get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@dataclass
class Server:
    name: str
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    startup_seconds: float = 0.0
    peak_rss: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)  # over project_environment

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 (the process's)
        began = time.monotonic()
        self.process = subprocess.Popen(
            command(self.name, self.port),
            cwd=PROJECT,
            env={
                **project_environment(self.workdir),
                **VARIANT_ENV.get(self.name, {}),
                **self.extra_env,
            },
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.log()}"
                )
            with contextlib.suppress(OSError):
                if get(f"http://127.0.0.1:{self.port}/plain", timeout=1) == 200:
                    self.startup_seconds = time.monotonic() - began
                    if self.name in OURS:
                        # With --processes the first 200 comes from the first process
                        # up; the load waits for the startup probe, which is 200 once
                        # every process serves.
                        self.wait_for_startup_probe(deadline)
                    return
            # Polled often: start-ups differ by tens of milliseconds, and each poll
            # costs the starting server little (a refused connection).
            time.sleep(STARTUP_POLL)
        raise RuntimeError(f"{self.name} did not answer 200 within {timeout} s: {self.log()}")

    def wait_for_startup_probe(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if get(f"http://127.0.0.1:{self.port + 1}/startup", timeout=1) == 200:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}'s startup probe never answered 200: {self.log()}")

    def log(self) -> str:
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def sample_memory(self) -> None:
        self.peak_rss = max(self.peak_rss, rss_bytes(self.pids()))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


# -- load --------------------------------------------------------------------------------


@dataclass
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float
    requests: int

    @property
    def per_cpu_second(self) -> float:
        return self.requests / self.cpu_seconds if self.cpu_seconds else 0.0


def milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def warm_up(server: Server, path: str, seconds: int, connections: int) -> None:
    """Unmeasured load before each cell: the steady state is what is compared, not
    the first second of a fresh process (lazy imports, caches, a worker pool still
    growing), which every server has too."""
    subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", server_url(server, path)],
        capture_output=True,
        timeout=seconds + 60,
    )


def server_url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def wrk(server: Server, path: str, duration: int, connections: int) -> Load:
    url = server_url(server, path)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            server.sample_memory()

    sampler = threading.Thread(target=sample, daemon=True)
    pids = server.pids()
    cpu_before = cpu_seconds(pids)
    sampler.start()
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    stop.set()
    sampler.join()
    cpu = cpu_seconds(server.pids()) - cpu_before
    out = result.stdout
    if result.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed on {server.name} {path}: {out}{result.stderr}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(value) for value in match.groups())
    return Load(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        # Anchored: a "+/- Stdev" column such as "71.50%" also ends in "50%".
        p50_ms=milliseconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        p99_ms=milliseconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        errors=errors,
        cpu_seconds=cpu,
        requests=requests,
    )


@dataclass
class ProbeLatency:
    p99_ms: float
    timeouts: int
    ready_not_200: int


@contextlib.contextmanager
def polling_probes(probe_port: int) -> Iterator[list]:
    """Poll /alive and /ready every 50 ms while the block runs."""
    samples: list[tuple[str, float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.05):
            for probe in ("/alive", "/ready"):
                began = time.monotonic()
                try:
                    code = get(f"http://127.0.0.1:{probe_port}{probe}", timeout=1.0)
                except OSError:
                    code = 0
                samples.append((probe, (time.monotonic() - began) * 1000, code))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def probe_latency(samples: list[tuple[str, float, int]]) -> ProbeLatency:
    latencies = sorted(ms for _, ms, _ in samples)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return ProbeLatency(
        p99_ms=p99,
        timeouts=sum(1 for _, _, code in samples if code == 0),
        ready_not_200=sum(1 for probe, _, code in samples if probe == "/ready" and code != 200),
    )


# -- the in-process ceiling --------------------------------------------------------------


def in_process_ceiling(path: str = "/plain", seconds: float = 3.0) -> float:
    """Requests per second of Django's WSGI handler called in a loop, no server."""
    code = f"""
import io, os, sys, time
sys.path.insert(0, {str(PROJECT)!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "webproject.settings"
from webproject.wsgi import application
environ = {{"REQUEST_METHOD": "GET", "PATH_INFO": {path!r}, "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
    "SERVER_PROTOCOL": "HTTP/1.1", "QUERY_STRING": "", "HTTP_HOST": "127.0.0.1"}}
def start_response(status, headers, exc_info=None):
    assert status.startswith("200"), status
done, end = 0, time.monotonic() + {seconds}
while time.monotonic() < end:
    environ["wsgi.input"] = io.BytesIO()
    b"".join(application(dict(environ), start_response))
    done += 1
print(done / {seconds})
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


# -- the run -----------------------------------------------------------------------------


def check_tools(servers: list[str]) -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    for package in PEER_PACKAGES:
        if package in servers:
            try:
                __import__(package)
            except ImportError:
                sys.exit(f"{package} is missing: pip install -r bench/requirements.txt")


def compile_sources() -> None:
    """Byte-compile Hurricane's checkout and the project, as installing a package does.

    The peers come byte-compiled by pip; an editable checkout run with
    PYTHONDONTWRITEBYTECODE set (this machine sets it) would be compiled from source
    at every start, and "start to first 200" would time the compiler (compiling all
    of Hurricane's modules takes 75 ms here).
    """
    for folder in (ROOT / "hurricane", PROJECT):
        compileall.compile_dir(folder, quiet=1)


def migrate(workdir: Path) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=PROJECT,
        env=project_environment(workdir),
        check=True,
    )


@dataclass
class Cell:
    loads: list[Load] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(load, attribute) for load in self.loads)


@dataclass
class Results:
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    startup: dict[str, list[float]] = field(default_factory=dict)
    peak_rss: dict[str, list[int]] = field(default_factory=dict)
    probes: dict[str, list[ProbeLatency]] = field(default_factory=dict)

    def best_peer(self, path: str) -> str | None:
        """The peer (not a variant of Hurricane) with the most requests per second."""
        served = [
            (cell.median("requests_per_second"), server)
            for (server, cell_path), cell in self.cells.items()
            if cell_path == path and server not in OURS and cell.loads
        ]
        return max(served)[1] if served else None

    def ratio(self, ours: str, peer: str, path: str) -> tuple[float, float] | None:
        """Ours over the peer's: requests per second, and per CPU-second."""
        mine, theirs = self.cells.get((ours, path)), self.cells.get((peer, path))
        if not mine or not theirs:
            return None
        rate = mine.median("requests_per_second") / theirs.median("requests_per_second")
        cpu = mine.median("per_cpu_second") / max(theirs.median("per_cpu_second"), 1e-9)
        return rate, cpu


def run(args: argparse.Namespace) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="hurricane-bench-") as folder:
        workdir = Path(folder)
        compile_sources()
        migrate(workdir)
        for run_number in range(1, args.runs + 1):
            for name in args.servers:
                server = Server(name, workdir)
                print(f"run {run_number}: {name}", file=sys.stderr, flush=True)
                try:
                    server.start()
                    for path in args.paths:
                        if args.warmup:
                            warm_up(server, path, args.warmup, args.connections)
                        if path == "/plain" and name in PROBED:
                            with polling_probes(server.port + 1) as samples:
                                load = wrk(server, path, args.duration, args.connections)
                            results.probes.setdefault(name, []).append(probe_latency(samples))
                        else:
                            load = wrk(server, path, args.duration, args.connections)
                        results.cells.setdefault((name, path), Cell()).loads.append(load)
                        print(
                            f"  {path}: {load.requests_per_second:,.0f} req/s, "
                            f"{load.per_cpu_second:,.0f} req/CPU-s, {load.errors} errors",
                            file=sys.stderr,
                            flush=True,
                        )
                finally:
                    server.stop()
                results.startup.setdefault(name, []).append(server.startup_seconds)
                results.peak_rss.setdefault(name, []).append(server.peak_rss)
    return results


def target_lines(results: Results) -> list[str]:
    """Each performance target whose servers were measured: the figure, and whether
    it is met."""
    rows = []

    def ratio_row(label: str, ours: str, peer: str, path: str, bar: float, cpu: bool) -> None:
        ratio = results.ratio(ours, peer, path)
        if ratio:
            value = ratio[1] if cpu else ratio[0]
            rows.append(f"| {label} | {value:.2f}x | {'yes' if value >= bar else 'no'} |")

    for path in ("/plain", "/json"):
        ratio_row(f"{path} >= 1.0x gunicorn", "hurricane", "gunicorn", path, 1.0, False)
        ratio_row(f"{path} >= 1.0x granian per CPU-s", "hurricane", "granian", path, 1.0, True)
    ratio_row("/sleep >= 0.9x granian", "hurricane", "granian", "/sleep", 0.9, False)
    ratio_row("/sleep >= 0.97x granian", "hurricane", "granian", "/sleep", 0.97, False)
    ratio_row("/asleep >= 2x uvicorn", "hurricane", "uvicorn", "/asleep", 2.0, False)
    for ours in ("hurricane", "hurricane-2p", HURRICANE_POOL, HURRICANE_2P_POOL):
        best = results.best_peer("/asleep")
        if best:
            label = f"{ours}: /asleep >= 1.0x the best peer ({best})"
            ratio_row(label, ours, best, "/asleep", 1.0, False)
    for ours, how in (("hurricane", "ASGI_APPLICATION"), (HURRICANE_CHANNELS, "a Channels router")):
        for path in ("/plain", "/json"):
            label = f"{path} with {how} >= 0.95x the WSGI path"
            ratio_row(label, ours, HURRICANE_WSGI, path, 0.95, False)
    ratio_row(
        "--processes 2: /plain >= 1.0x granian", "hurricane-2p", "granian", "/plain", 1.0, False
    )
    samples = results.probes.get("hurricane")
    if samples:
        p99 = statistics.median(s.p99_ms for s in samples)
        timeouts = sum(s.timeouts for s in samples)
        met = p99 < 50 and timeouts == 0
        rows.append(
            f"| probes p99 < 50 ms, no timeout | {p99:.1f} ms, {timeouts} timeouts | "
            f"{'yes' if met else 'no'} |"
        )
    if "hurricane" in results.peak_rss and "original" in results.peak_rss:
        ours = statistics.median(results.peak_rss["hurricane"])
        theirs = statistics.median(results.peak_rss["original"])
        rows.append(
            f"| peak RSS <= 1.2x original | {ours / theirs:.2f}x | "
            f"{'yes' if ours <= 1.2 * theirs else 'no'} |"
        )
        ours = statistics.median(results.startup["hurricane"])
        theirs = statistics.median(results.startup["original"])
        rows.append(
            f"| start to first 200 <= original | {ours:.2f} s vs {theirs:.2f} s | "
            f"{'yes' if ours <= theirs else 'no'} |"
        )
    return rows


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for package in ("django", "tornado", *PEER_PACKAGES):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            found.append(f"{package} {version(package)}")
    return ", ".join(found)


def median_cell(cell: Cell) -> str:
    rate, per_cpu = cell.median("requests_per_second"), cell.median("per_cpu_second")
    return f"{rate:,.0f} ({per_cpu:,.0f})"


def spread_cell(cell: Cell) -> str:
    rates = [load.requests_per_second for load in cell.loads]
    return f"{min(rates):,.0f}-{max(rates):,.0f}"


def path_by_server_table(
    results: Results, paths: list[str], servers: list[str], text: Callable[[Cell], str]
) -> list[str]:
    """A markdown table with a row per path and a column per server, each cell's text
    from ``text`` ("–" where the server did not serve the path)."""
    lines = ["| path | " + " | ".join(servers) + " |", "|---|" + "---:|" * len(servers)]
    for path in paths:
        row = [path]
        for server in servers:
            cell = results.cells.get((server, path))
            row.append(text(cell) if cell and cell.loads else "–")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def report(results: Results, args: argparse.Namespace, ceiling: float | None) -> str:
    servers = [s for s in args.servers if any((s, p) in results.cells for p in args.paths)]
    peers = [s for s in servers if s not in OURS]
    lines = [
        "# HTTP benchmark",
        "",
        f"`python bench/servers.py --runs {args.runs} --duration {args.duration}`: "
        f"wrk -t2 -c{args.connections} -d{args.duration}s on 127.0.0.1 after {args.warmup} s "
        f"of unmeasured load, median of {args.runs} "
        f"run(s), {os.cpu_count()} CPUs, {versions()}. hurricane-2p is `serve --processes 2`"
        + "".join(
            f", {variant} {VARIANT_TEXT[variant]}" for variant in OPTIONAL if variant in servers
        )
        + ".",
        "",
        "Requests per second (requests per CPU-second of the server in brackets):",
        "",
        *path_by_server_table(results, args.paths, servers, median_cell),
    ]
    if args.runs > 1:
        # The machine's speed drifts between runs (a shared host): the spread says how
        # far one median can be trusted.
        lines += [
            "",
            "Lowest and highest run, requests per second:",
            "",
            *path_by_server_table(results, args.paths, servers, spread_cell),
        ]
    ours = [s for s in servers if s in OURS]
    if ours and peers:
        lines += [
            "",
            "Hurricane's ratio to each peer, requests per second (per CPU-second):",
            "",
            "| path | Hurricane | " + " | ".join(peers) + " |",
            "|---|---|" + "---:|" * len(peers),
        ]
        for path in args.paths:
            for variant in ours:
                row = [path, variant]
                for peer in peers:
                    ratio = results.ratio(variant, peer, path)
                    row.append(f"{ratio[0]:.2f}x ({ratio[1]:.2f}x)" if ratio else "–")
                lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| server | start to first 200 | peak RSS | errors | p99 /plain |",
        "|---|---:|---:|---:|---:|",
    ]
    for server in servers:
        errors = sum(
            load.errors
            for (s, _), cell in results.cells.items()
            if s == server
            for load in cell.loads
        )
        plain = results.cells.get((server, "/plain"))
        lines.append(
            f"| {server} | {statistics.median(results.startup[server]):.2f} s | "
            f"{statistics.median(results.peak_rss[server]) / 2**20:.0f} MiB | {errors} | "
            f"{plain.median('p99_ms'):.1f} ms |"
            if plain
            else f"| {server} | – | – | {errors} | – |"
        )
    if results.probes:
        lines += [
            "",
            "Probes polled every 50 ms while /plain is saturated:",
            "",
            "| server | p99 /alive + /ready | timeouts | /ready not 200 |",
            "|---|---:|---:|---:|",
        ]
        for server, samples in results.probes.items():
            lines.append(
                f"| {server} | {statistics.median(s.p99_ms for s in samples):.1f} ms | "
                f"{sum(s.timeouts for s in samples)} | {sum(s.ready_not_200 for s in samples)} |"
            )
    targets = target_lines(results)
    if targets:
        lines += ["", "The targets:", "", "| target | measured | met |", "|---|---|---|"]
        lines += targets
    uvicorn = results.cells.get(("uvicorn", "/asleep"))
    if uvicorn and uvicorn.loads:
        # Each connection waits for one view at a time, so the 50 ms views have a
        # ceiling that no server can pass, however fast it is.
        limit = args.connections / VIEW_SLEEP_SECONDS
        bar = 2 * uvicorn.median("requests_per_second")
        lines += [
            "",
            f"No server can pass {args.connections} connections / "
            f"{VIEW_SLEEP_SECONDS * 1000:.0f} ms = {limit:,.0f} req/s "
            f"on /sleep and /asleep. The /asleep bar (2x uvicorn) is {bar:,.0f} req/s in "
            f"this run: {bar / limit:.0%} of that limit.",
        ]
    if ceiling is not None:
        lines += [
            "",
            f"In-process ceiling (Django's WSGI handler in a loop, /plain, one "
            f"thread): {ceiling:,.0f} req/s.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers", nargs="+", choices=(*SERVERS, *OPTIONAL), default=list(SERVERS)
    )
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per cell")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unmeasured load before each cell"
    )
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "http.md")
    args = parser.parse_args()
    check_tools(args.servers)
    results = run(args)
    table = report(results, args, in_process_ceiling())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
