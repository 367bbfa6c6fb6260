"""``serve --processes N``: every serving process answers, a killed one is replaced,
SIGTERM drains them all, and the supervisor's probes and /metrics speak for all of
them. Real processes, real sockets."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import threading
import time
import unittest.mock
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import free_port, run_serve, wait_until
from hurricane.serve.affinity import usable_cores


def pid_of_response(server) -> int:
    # A new connection each time, so that the kernel may hand it to any process.
    response = requests.get(server.url("/meta/"), headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return response.json()["pid"]


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def metric(server, name: str, **labels: str) -> float:
    text = requests.get(server.probe("/metrics"), timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_process_serves_and_metrics_add_up(serve):
    server = serve("--processes", "2", "--workers", "2")
    assert "2 processes" in server.output
    children = children_of(server.process.pid)
    assert len(children) == 2, server.output
    seen: set[int] = set()
    sent = 0
    # Bounded by time, not by a count: on a loaded machine one process can take a few
    # hundred connections in a row before the other's accept wins one.
    deadline = time.monotonic() + 30
    while seen != children and time.monotonic() < deadline:
        seen.add(pid_of_response(server))
        sent += 1
    assert seen == children, f"only {seen} of {children} answered in {sent} requests"
    assert requests.get(server.probe("/ready"), timeout=5).status_code == 200
    assert requests.get(server.probe("/alive"), timeout=5).status_code == 200
    # Requests answered by both processes, counted once each on the one endpoint.
    assert metric(server, "hurricane_http_requests_total", route="meta/", status="200") == sent
    assert metric(server, "hurricane_serving_processes") == 2


def test_keep_alive_connections_opened_at_once_spread_over_the_processes(serve):
    """A burst of connections (a client pool, a proxy warming up) must not all land on
    the process that woke first: each keeps its connections for as long as they live.
    The kernel places the processes here (--cpu-affinity off): pinned, one to a core
    that something else keeps busy (another test's process), it would rightly take
    fewer."""
    server = serve("--processes", "2", "--workers", "2", "--cpu-affinity", "off")
    children = children_of(server.process.pid)
    bursts = []
    for _ in range(3):
        per_process = {pid: 0 for pid in children}
        connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(32)]
        try:
            for connection in connections:
                connection.sendall(b"GET /meta/ HTTP/1.1\r\nHost: x\r\n\r\n")
            for connection in connections:
                per_process[pid_from_raw_response(connection)] += 1
        finally:
            for connection in connections:
                connection.close()
        bursts.append(sorted(per_process.values()))
    # Taking them 128 at a time, one process kept whole bursts. One at a time, a
    # process descheduled for a moment (a busy machine) can still miss most of a
    # burst: beside a process spinning on a core, the fewer of the two got 9 of 96
    # once in 36 runs, 17 or more in the others. The rule itself is checked exactly
    # below (test_a_wake_up_takes_as_many_connections_as_allowed).
    fewest = sum(counts[0] for counts in bursts)
    assert fewest >= 96 // 8, f"connections per process in each burst: {bursts}"


@pytest.mark.parametrize(("per_wakeup", "taken"), [(1, 1), (3, 3), (128, 5)])
def test_a_wake_up_takes_as_many_connections_as_allowed(per_wakeup, taken):
    """The serving processes take one connection per wake-up of the shared socket
    (ACCEPT_PER_WAKEUP alone): five waiting, one wake-up takes ``taken``."""
    from tornado.ioloop import IOLoop

    from hurricane.http.server import add_accept_handler

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
    accepted: list[socket.socket] = []
    handlers = {}
    loop = IOLoop(make_current=False)
    try:
        loop.add_handler = lambda fd, handler, events: handlers.setdefault("accept", handler)
        loop.remove_handler = lambda fd: None
        with unittest.mock.patch.object(IOLoop, "current", return_value=loop):
            add_accept_handler(listener, lambda sock, address: accepted.append(sock), per_wakeup)
        time.sleep(0.1)  # the handshakes are done: five connections wait
        handlers["accept"](listener.fileno(), IOLoop.READ)
        assert len(accepted) == taken
    finally:
        for sock in (*accepted, *clients, listener):
            sock.close()
        loop.close()


def pid_from_raw_response(connection: socket.socket) -> int:
    connection.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += connection.recv(65536)
    return json.loads(body)["pid"]


def test_a_killed_process_is_replaced_without_failed_requests(serve):
    server = serve("--processes", "2", "--workers", "2")
    first = children_of(server.process.pid)
    for _ in range(20):
        pid_of_response(server)
    counted = metric(server, "hurricane_http_requests_total", route="meta/")
    assert counted == 20

    failures: list[BaseException] = []
    answered = 0
    stop = threading.Event()

    def keep_asking() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                pid_of_response(server)
                answered += 1
            except BaseException as error:  # noqa: BLE001 - any failure fails the test
                failures.append(error)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: (
                len(children_of(server.process.pid) - first) == 1
                and metric(server, "hurricane_serving_processes") == 2
            ),
            timeout=30,
            what="a new serving process",
            server=server,
        )
    finally:
        stop.set()
        asker.join(30)
    assert not failures, failures[:3]
    assert answered > 0
    assert re.search(rf"Serving process \d \(pid {victim}\) exited with code -9", server.output)
    survivor = (first - {victim}).pop()
    assert children_of(server.process.pid) >= {survivor}
    # The dead process's requests stay counted.
    assert metric(server, "hurricane_http_requests_total", route="meta/") >= 20 + answered


def test_a_hung_process_is_killed_and_replaced(serve):
    """A serving process whose event loop stops (here: SIGSTOP) writes no heartbeat;
    after HUNG_AFTER (30 s) the supervisor kills it, says so, and starts another,
    while the other process answers all along."""
    from hurricane.serve.supervisor import HUNG_AFTER

    server = serve("--processes", "2", "--workers", "2")
    first = children_of(server.process.pid)
    hung = sorted(first)[0]
    os.kill(hung, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_until(
            lambda: (
                hung not in children_of(server.process.pid)
                and len(children_of(server.process.pid) - first) == 1
                and metric(server, "hurricane_serving_processes") == 2
            ),
            timeout=HUNG_AFTER + 30,
            what="the hung process to be replaced",
            server=server,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    assert time.monotonic() - stopped_at > HUNG_AFTER
    assert re.search(
        rf"Serving process \d \(pid {hung}\) wrote no heartbeat for \d+ s: its event loop is "
        "stuck; killing it",
        server.output,
    ), server.output
    assert re.search(rf"Serving process \d \(pid {hung}\) exited with code -9", server.output)
    for _ in range(10):
        assert pid_of_response(server) != hung


def test_the_supervisor_alone_sends_the_webhooks(serve, webhook_receiver):
    """A receiver hears of one start per pod: not once more from each serving
    process, nor again when one is replaced."""
    server = serve("--processes", "2", "--webhook-url", webhook_receiver.url)
    webhook_receiver.wait_for(lambda w: w["type"] == "startup")
    first = children_of(server.process.pid)
    os.kill(sorted(first)[0], signal.SIGKILL)
    wait_until(
        lambda: server.output.count(": serving on port") == 3, 30, "a new serving process", server
    )
    assert pid_of_response(server)
    time.sleep(1)  # what the new process would send has had time to arrive
    starts = [w for w in webhook_receiver.received if w["type"] == "startup"]
    assert [w["status"] for w in starts] == ["succeeded"], webhook_receiver.received


def test_sigterm_drains_every_process(serve):
    server = serve("--processes", "2", "--workers", "4", "--graceful-timeout", "20")
    children = children_of(server.process.pid)

    def slow() -> tuple[int, str]:
        response = requests.get(
            server.url("/slow/?seconds=2"), headers={"Connection": "close"}, timeout=30
        )
        return response.status_code, response.text

    with ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(slow) for _ in range(8)]
        wait_until(
            lambda: metric(server, "hurricane_http_requests_in_flight") == 8,
            timeout=10,
            what="8 requests in flight",
            server=server,
        )
        server.signal(signal.SIGTERM)
        wait_until(
            lambda: requests.get(server.probe("/ready"), timeout=5).status_code == 503,
            timeout=5,
            what="readiness 503 while draining",
            server=server,
        )
        results = [future.result() for future in in_flight]
    assert results == [(200, "slept 2.0")] * 8
    assert server.wait_exit(30) == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children), server.output
    # Both processes served some of the eight and drained them.
    assert server.output.count("Drained; exiting") == 3, server.output


def test_more_processes_than_cores_is_a_warning(serve):
    """One more process than this machine lets it use: it serves, and says why that
    is no gain."""
    cores = usable_cores()
    count = math.ceil(cores) + 1
    server = serve("--processes", str(count))
    assert pid_of_response(server)
    assert (
        f"WARNING hurricane.server.general --processes {count} is more than the "
        f"{round(cores, 2):g} core(s) this container may use (its cpuset and CPU limit)"
    ) in server.output, server.output


def test_processes_need_a_probe_port_of_their_own(tmp_path):
    port = free_port()
    _, result = run_serve(tmp_path, "--processes", "2", "--probe-port", str(port), port=port)
    assert result.returncode != 0
    assert "--processes needs the probes on a port of their own" in result.stderr


def test_processes_must_be_a_positive_number(tmp_path):
    _, result = run_serve(tmp_path, HURRICANE_PROCESSES="0")
    assert result.returncode != 0
    assert "invalid value '0' for --processes (from environment HURRICANE_PROCESSES)" in (
        result.stderr
    )


def test_processes_and_autoreload_do_not_combine(tmp_path):
    _, result = run_serve(tmp_path, "--processes", "2", "--autoreload")
    assert result.returncode != 0
    assert "--processes and --autoreload cannot be combined" in result.stderr


def test_a_process_that_cannot_start_fails_the_start_up(serve, webhook_receiver):
    # Every serving process fails to load the application: the supervisor says so,
    # sends the failure webhook and exits 1 instead of starting them again and again.
    settings = '{"WSGI_APPLICATION": "testproject.missing.application"}'
    server = serve(
        "--processes",
        "2",
        "--webhook-url",
        webhook_receiver.url,
        env={"TEST_SETTINGS": settings},
        wait=False,
    )
    assert server.wait_exit(60) == 1, server.output
    assert "Loading the application failed" in server.output
    assert re.search(
        r"Serving process \d exited with code 1 before it served \(its log says why\)",
        server.output,
    )
    assert "TypeError" not in server.output, server.output
    hook = webhook_receiver.wait_for(lambda item: item.get("type") == "startup", timeout=10)
    assert hook["status"] == "failed", hook
    assert "exited with code 1 before it served" in hook["traceback"], hook
