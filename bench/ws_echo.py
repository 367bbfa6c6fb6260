"""WebSocket echo benchmark: Hurricane against uvicorn (its websockets and wsproto
implementations), daphne and granian serving one ASGI echo
(bench/webproject/webproject/ws_echo.py).

    python bench/ws_echo.py                     every server, 64 and 1000 clients, 3 runs
    python bench/ws_echo.py --runs 1 --duration 5 --clients 64 --servers hurricane

For each run, each server in turn (interleaved) is started fresh, one process, on
CPU 1; the load generator (this script's own asyncio client over raw sockets: one
pre-masked 32-byte text frame per round trip, no per-message work in Python beyond
reading the echo) runs on CPU 0. Each client sends a message, waits for its echo,
and sends the next, for --duration seconds. Reported: round trips per second, the
server's CPU seconds (from /proc) and round trips per CPU-second, and the server's
resident memory per idle connection (RSS with 1,000 idle connections open, less RSS
before, over 1,000). Each cell is the median of the runs; the table is printed and
written to bench/results/websockets.md. Compression is off for all (the client does
not ask for it), so that zlib's cost does not hide the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROJECT = BENCH / "webproject"
APP = "webproject.ws_echo:application"
SERVERS = ("hurricane", "uvicorn-websockets", "uvicorn-wsproto", "daphne", "granian")
KEY = base64.b64encode(os.urandom(16)).decode()
PAYLOAD = b"x" * 32
MASK = b"\x01\x02\x03\x04"
FRAME = (
    bytes([0x81, 0x80 | len(PAYLOAD)])
    + MASK
    + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))
)
ECHO = bytes([0x81, len(PAYLOAD)]) + PAYLOAD  # what an unmasked echo looks like
IDLE_CONNECTIONS = 1000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port + 1))
                return port
            except OSError:
                continue


def command(server: str, port: int) -> list[str]:
    on_cpu1 = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    if server == "hurricane":
        return [
            *on_cpu1,
            sys.executable,
            "manage.py",
            "serve",
            "--port",
            str(port),
            "--cpu-affinity",
            "off",
            "--ws-per-message-deflate",
            "off",
        ]
    if server == "daphne":
        # Channels' own server (Twisted and autobahn); no access log unless asked.
        return [
            *on_cpu1,
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "-v",
            "0",
            APP,
        ]
    if server == "granian":
        # asginl: ASGI without the lifespan protocol, as the others run it.
        return [
            *on_cpu1,
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asginl",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            APP,
        ]
    implementation = server.removeprefix("uvicorn-")
    return [
        *on_cpu1,
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--port",
        str(port),
        "--ws",
        implementation,
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "off",
        "--ws-per-message-deflate",
        "false",
    ]


def start(server: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=f"{ROOT}{os.pathsep}{PROJECT}",
        DJANGO_SETTINGS_MODULE="webproject.settings",
        BENCH_DATABASE=os.environ.get("BENCH_DATABASE", str(PROJECT / "bench.sqlite3")),
    )
    env["BENCH_ASGI_APPLICATION"] = "webproject.ws_echo.application"
    process = subprocess.Popen(
        command(server, port),
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            asyncio.run(asyncio.wait_for(open_websocket(port), 1))
            return process, port
        except (OSError, asyncio.TimeoutError, AssertionError):
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{server} did not accept a WebSocket within 30 s")


async def open_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def process_tree(pid: int) -> list[int]:
    """The process and its descendants: granian serves from a worker process of its
    supervisor's."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo.extend(int(child) for child in task.read_text().split())
    return tree


def cpu_seconds(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return sum(
        int(Path(f"/proc/{member}/statm").read_text().split()[1]) * PAGE_SIZE
        for member in process_tree(pid)
    )


async def echo_load(port: int, clients: int, duration: float, pid: int) -> tuple[int, float]:
    """Round trips in ``duration`` and the server's CPU seconds meanwhile (the
    handshakes before are not counted)."""
    connections = [await open_websocket(port) for _ in range(clients)]
    cpu_before = cpu_seconds(pid)
    stop = time.monotonic() + duration
    counts = [0] * clients

    async def client(index: int) -> None:
        reader, writer = connections[index]
        while time.monotonic() < stop:
            writer.write(FRAME)
            echo = await reader.readexactly(len(ECHO))
            assert echo == ECHO, echo
            counts[index] += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    cpu = cpu_seconds(pid) - cpu_before
    for _, writer in connections:
        writer.close()
    return sum(counts), cpu


async def idle_memory(pid: int, port: int) -> float:
    before = rss_bytes(pid)
    connections = []
    for _ in range(IDLE_CONNECTIONS):
        connections.append(await open_websocket(port))
    await asyncio.sleep(1)
    after = rss_bytes(pid)
    for _, writer in connections:
        writer.close()
    return (after - before) / IDLE_CONNECTIONS


def pin_client() -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--clients", type=int, nargs="+", default=[64, 1000])
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "websockets.md")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    pin_client()
    results: dict[tuple[str, str], list[float]] = {}
    for run in range(args.runs):
        order = args.servers if run % 2 == 0 else list(reversed(args.servers))
        for server in order:
            process, port = start(server)
            try:
                # Memory first, on the fresh process: after the load its heap has grown.
                per_idle = asyncio.run(idle_memory(process.pid, port))
                results.setdefault((server, "KiB/idle"), []).append(per_idle / 1024)
                print(f"run {run + 1} {server}: {per_idle / 1024:.1f} KiB per idle WebSocket")
                for clients in args.clients:
                    trips, cpu = asyncio.run(echo_load(port, clients, args.duration, process.pid))
                    rate = trips / args.duration
                    results.setdefault((server, f"rt/s c{clients}"), []).append(rate)
                    results.setdefault((server, f"rt/CPU-s c{clients}"), []).append(
                        trips / cpu if cpu else 0.0
                    )
                    print(
                        f"run {run + 1} {server} c{clients}: {rate:,.0f} round trips/s, "
                        f"{cpu:.2f} CPU-s, {trips / cpu if cpu else 0:,.0f} per CPU-s",
                        flush=True,
                    )
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    columns = (
        [f"rt/s c{c}" for c in args.clients]
        + [f"rt/CPU-s c{c}" for c in args.clients]
        + ["KiB/idle"]
    )
    lines = [
        "# WebSocket echo",
        "",
        f"`python bench/ws_echo.py --runs {args.runs} --duration {args.duration:g} "
        f"--clients {' '.join(map(str, args.clients))}` on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}); medians of "
        f"{args.runs} runs. rt/s: 32-byte echo round trips per second with c clients, "
        "each waiting for its echo before the next; rt/CPU-s: round trips per second "
        "of the server's CPU time; KiB/idle: the server's RSS per idle WebSocket "
        f"({IDLE_CONNECTIONS:,} open). Server on CPU 1, this client on CPU 0.",
        "",
        "| server | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for server in args.servers:
        cells = []
        for column in columns:
            values = results.get((server, column), [])
            value = statistics.median(values) if values else float("nan")
            cells.append(f"{value:,.1f}" if column == "KiB/idle" else f"{value:,.0f}")
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
