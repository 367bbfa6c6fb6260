"""``serve --processes N``: a supervisor and N serving processes sharing one socket.

The supervisor runs what a pod needs once: the probe and metrics server, the
start-up tasks (commands, migration checks), the listening socket. It then starts
N serving processes, each the same command again (a fresh interpreter: nothing
the supervisor's threads held is inherited by accident), handed the listening
socket the way an in-place restart hands it on. The kernel gives each accepted
connection to one of them; a process that dies leaves the socket, and the
connections waiting in it, to the others while the supervisor starts a new one.

Each serving process writes a row of numbers (serving yet, backlog, requests in
flight, requests served, a heartbeat) to a small shared file every
``HEARTBEAT_INTERVAL``; the supervisor's probes read them. Request metrics go
through prometheus_client's multiprocess mode, one directory per supervisor, so
``/metrics`` adds up every process, including the ones that have been replaced.
"""

from __future__ import annotations

import asyncio
import logging
import math
import mmap
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, replace
from typing import Any

from hurricane.config.options import ServeOptions, probe_port_of
from hurricane.http.eventloop import loop_kind
from hurricane.platform.listening import hand_on_sockets, inherited_sockets
from hurricane.platform.startup import StartupError
from hurricane.serve.affinity import CoreKeeper, usable_cores
from hurricane.serve.lifecycle import Lifecycle
from hurricane.serve.server import Server
from hurricane.serve.state import ServerState

logger = logging.getLogger("hurricane.server.general")

# Set by the supervisor for each serving process it starts.
PROCESS_INDEX_VARIABLE = "HURRICANE_PROCESS_INDEX"
PROCESS_DIR_VARIABLE = "HURRICANE_PROCESS_DIR"
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

HEARTBEAT_INTERVAL = 0.25
# A row older than this is not counted as serving (a stuck or stopped process).
HEARTBEAT_STALE = 5.0
# A process that dies sooner than this after its start counts as crashing: the
# next start waits longer each time, up to RESTART_BACKOFF_MAX seconds.
CRASH_WINDOW = 10.0
# A serving process that said it serves and then wrote no heartbeat for this long has
# an event loop that does not come back (a deadlock, a C extension that never
# returns): it answers no request and no drain, so it is killed and replaced, as
# gunicorn's arbiter does with a worker past its --timeout (30 s). Requests run in
# worker threads and do not hold the loop: a slow view is not a hung process.
HUNG_AFTER = 30.0
HUNG_CHECK_INTERVAL = 1.0
RESTART_BACKOFF_MAX = 30.0
# Beyond --graceful-timeout, how long the supervisor waits for the processes'
# own drains before it kills them.
EXIT_MARGIN = 5.0

FIELDS = (
    "pid",
    "serving",
    "backlog",
    "in_flight",
    "requests",
    "heartbeat_ms",
    "threads",
    "busy",
)


class ProcessSlots:
    """One row of integers per serving process, in a file every process maps."""

    def __init__(self, path: str, count: int, create: bool = False) -> None:
        # The rows, then one integer the supervisor writes: 1 once the pod drains.
        self._draining_at = len(FIELDS) * count
        size = 8 * (len(FIELDS) * count + 1)
        if create:
            with open(path, "wb") as file:
                file.write(b"\0" * size)
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), size)
        self._values = memoryview(self._map).cast("q")
        self.count = count

    def write(self, index: int, *values: int) -> None:
        start = index * len(FIELDS)
        for offset, value in enumerate(values):
            self._values[start + offset] = value

    def read(self, index: int) -> dict[str, int]:
        start = index * len(FIELDS)
        return dict(zip(FIELDS, self._values[start : start + len(FIELDS)].tolist(), strict=True))

    def rows(self) -> list[dict[str, int]]:
        return [self.read(index) for index in range(self.count)]

    def mark_pod_draining(self) -> None:
        self._values[self._draining_at] = 1

    def pod_draining(self) -> bool:
        """Whether the supervisor drains: during its --shutdown-delay the serving
        processes still answer HTTP, but take no new WebSocket."""
        return bool(self._values[self._draining_at])


def now_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass
class ChildRole:
    """What a serving process knows of its place: its row and its supervisor (a
    hurricane.serve.server.ServingRole)."""

    index: int
    slots: ProcessSlots
    supervisor_pid: int
    # The same in every serving process of one supervisor, and differs between
    # supervisors (pods): where the processes start taking cores (--cpu-affinity).
    core_seed: int = 0
    heartbeat_interval = HEARTBEAT_INTERVAL
    # Processes sharing the socket take turns (see ACCEPT_PER_WAKEUP).
    accept_per_wakeup = 1

    def make_state(self, options: ServeOptions, port: int) -> ChildServerState:
        return ChildServerState(options, port)

    def core_keeper(self, mode: str) -> CoreKeeper | None:
        return CoreKeeper.for_mode(mode, self.index, self.core_seed)

    def restarted(self, inherited: dict[int, list[socket.socket]]) -> bool:
        # Every start inherits the socket from the supervisor, which ran the start-up
        # tasks: no start of a serving process runs them (child_options).
        return False

    def serving(self, server: Server, restarted: bool) -> None:
        self.keep_reporting(server)
        logger.info(
            "Serving process %d: serving on port %d (%s, %d workers, %s%s): %s",
            self.index,
            server.port,
            server.mode,
            server.options.workers,
            loop_kind(server.options.loop),
            server.core_note(),
            server.app_urls,
        )

    def keep_reporting(self, server: Server) -> None:
        """Write this process's row for the supervisor's probes, every heartbeat; a
        process whose supervisor is gone drains and exits."""
        self.report(server.state)
        if server.websockets is not None and self.slots.pod_draining():
            server.websockets.refusing = True  # new handshakes get 503
        if self.orphaned() and not server.state.draining:
            logger.warning("The supervisor is gone: draining")
            asyncio.ensure_future(server.lifecycle.drain(0.0))
        asyncio.get_running_loop().call_later(self.heartbeat_interval, self.keep_reporting, server)

    def report(self, state: ServerState) -> None:
        self.slots.write(
            self.index,
            os.getpid(),
            int(state.serving and not state.draining),
            state.backlog(),
            len(state.requests.in_flight),
            state.requests.requests_served,
            now_ms(),
            state.worker_threads(),
            state.workers_busy(),
        )

    def orphaned(self) -> bool:
        return os.getppid() != self.supervisor_pid


class ChildServerState(ServerState):
    """A serving process's state: its request metrics go to prometheus_client's
    multiprocess files, which the supervisor shows added up; it has no metrics
    endpoint (nor gauges) of its own."""

    def __init__(self, options: ServeOptions, port: int) -> None:
        super().__init__(options, port)
        self.metrics = None

    def make_metrics(self) -> Any:
        from hurricane.metrics.exposition import ServingProcessMetrics

        return ServingProcessMetrics()


def child_role_from_environment() -> ChildRole | None:
    """Set when this process was started by a supervisor. Left in the environment:
    an in-place restart past --max-memory execs the same process again."""
    index = os.environ.get(PROCESS_INDEX_VARIABLE)
    folder = os.environ.get(PROCESS_DIR_VARIABLE)
    if index is None or folder is None:
        return None
    # The rows, and the supervisor's one integer after them (ProcessSlots).
    count = (os.path.getsize(os.path.join(folder, "slots")) // 8 - 1) // len(FIELDS)
    slots = ProcessSlots(os.path.join(folder, "slots"), count)
    # The folder's name is random (mkdtemp): a supervisor's pid is not, in a container.
    return ChildRole(int(index), slots, os.getppid(), zlib.crc32(folder.encode()))


def child_options(options: ServeOptions) -> ServeOptions:
    """A serving process's options: the supervisor answers probes, sends the webhooks
    (one startup webhook per pod, not one more per process and per replaced process),
    ran the start-up tasks and already waited --shutdown-delay before it passes
    SIGTERM on."""
    return replace(
        options,
        no_probe=True,
        command=(),
        shutdown_delay=0.0,
        autoreload=False,
        webhook_url=None,
        check_migrations=False,
        check_migrations_apply=False,
        debugger=False,
        pycharm_host=None,
        # The supervisor logged them.
        warnings=[],
    )


class SupervisorState(ServerState):
    """The probes' view of all serving processes, read from their rows. The probe
    server's thread reads the rows (each process writes its own, whole integers) and
    ``Supervisor.children`` (an element replaced by one assignment on the loop)."""

    def __init__(self, options: ServeOptions, port: int, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        super().__init__(options, port)
        self.backlog = lambda: sum(row["backlog"] for row in supervisor.live_rows())

    def make_metrics(self) -> Any:
        from hurricane.metrics.exposition import SupervisorMetrics

        rows = self.supervisor.live_rows
        return SupervisorMetrics(
            self.supervisor.metrics_dir,
            backlog=lambda: self.backlog(),
            in_flight=lambda: sum(row["in_flight"] for row in rows()),
            serving=lambda: sum(row["serving"] for row in rows()),
            threads=lambda: sum(row["threads"] for row in rows()),
            busy=lambda: sum(row["busy"] for row in rows()),
        )

    def start_draining(self) -> None:
        super().start_draining()
        # The serving processes drain after --shutdown-delay; until then they refuse
        # new WebSockets (the readiness probe, here, already fails).
        self.supervisor.slots.mark_pod_draining()

    def lifetime_used(self) -> int:
        return sum(row["requests"] for row in self.supervisor.slots.rows())

    def not_ready_reason(self) -> str | None:
        if not any(row["serving"] for row in self.supervisor.live_rows()):
            return "no serving process answers"
        return super().not_ready_reason()


class Supervisor:
    """The process Kubernetes sees: probes, start-up tasks, the socket, N children.
    Its :class:`Lifecycle` runs it: this is its work (start the serving processes,
    replace those that end, stop them on a drain)."""

    def __init__(self, options: ServeOptions, handle_signals: bool = True) -> None:
        probe_port = probe_port_of(options)
        if probe_port == options.port and not options.no_probe:
            raise StartupError(
                "--processes needs the probes on a port of their own (--probe-port "
                f"{probe_port} is the app port)"
            )
        self.options = options
        self.port: int = options.port
        self.count: int = options.processes
        cores = usable_cores()
        if self.count > math.ceil(cores):
            logger.warning(
                "--processes %d is more than the %g core(s) this container may use (its "
                "cpuset and CPU limit): the processes take turns on them, each with its "
                "own memory; one process per core serves the most",
                self.count,
                round(cores, 2),
            )
        self.folder = tempfile.mkdtemp(prefix="hurricane-processes-")
        self.metrics_dir = os.path.join(self.folder, "metrics")
        os.mkdir(self.metrics_dir)
        self.slots = ProcessSlots(os.path.join(self.folder, "slots"), self.count, create=True)
        self.children: list[subprocess.Popen | None] = [None] * self.count
        self.started_at = [0.0] * self.count
        self.quick_deaths = [0] * self.count
        self.app_sockets: list[socket.socket] = []
        self.app_urls = ""
        self.listening = False
        self.mode = f"{self.count} processes"
        self.state = SupervisorState(options, self.port, self)
        self.lifecycle = Lifecycle(options, self.state, self, handle_signals)

    def run(self) -> int:
        # asyncio's own loop whatever --loop says (that is for the serving processes):
        # the supervisor serves no app requests, and it watches its children through
        # SIGCHLD, which uvloop keeps for itself.
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(self.main())

    def live_rows(self) -> list[dict[str, int]]:
        """Rows of the processes running now, with a fresh heartbeat."""
        fresh_after = now_ms() - HEARTBEAT_STALE * 1000
        rows = []
        for index, child in enumerate(self.children):
            row = self.slots.read(index)
            if child is not None and row["pid"] == child.pid and row["heartbeat_ms"] > fresh_after:
                rows.append(row)
        return rows

    async def main(self) -> int:
        try:
            # Never an in-place restart: the serving processes restart for memory.
            return await self.lifecycle.run(inherited_sockets(), restarted=False)
        finally:
            await self.stop_children(wait=self.options.graceful_timeout + EXIT_MARGIN)
            for sock in self.app_sockets:
                sock.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- the Work of a Lifecycle ----------------------------------------------------------

    def open_app_port(self, inherited: dict[int, list[socket.socket]]) -> None:
        # Only the sockets (one per address): the serving processes accept on them.
        self.app_sockets, self.app_urls = self.lifecycle.bind_app_port(inherited)
        self.listening = True

    async def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        if self.lifecycle.handle_signals:
            loop.add_signal_handler(signal.SIGCHLD, self.reap)
        for index in range(self.count):
            self.spawn(index)
        stopping = self.lifecycle.stopping
        assert stopping is not None  # Lifecycle.run made it before the start
        while len([row for row in self.live_rows() if row["serving"]]) < self.count:
            if stopping.done():
                return False
            for index, child in enumerate(self.children):
                if child is not None and child.poll() is not None:
                    await self.lifecycle.fail_startup(
                        f"Serving process {index} exited with code {child.returncode} "
                        "before it served (its log says why)",
                        None,
                    )
                    return False
            await asyncio.sleep(0.05)
        loop.call_later(HUNG_CHECK_INTERVAL, self.kill_hung_children)
        return True

    def serving(self, restarted: bool) -> None:
        # The supervisor keeps to no core: it serves no requests, and a serving
        # process it starts again would inherit its core and find no other to choose.
        self.lifecycle.announce(self.mode, "", self.app_urls, restarted)
        if not self.options.max_memory:
            logger.info("Starting without memory allocation check")
        # Else each serving process watches its own memory (and restarts in place).

    async def stop(self, restart: bool) -> None:
        # Each process drains on its own: finishes what it has, closes its copy of
        # the socket. Ours closes now, so that the port refuses once they are done.
        await self.stop_children(wait=self.options.graceful_timeout + EXIT_MARGIN)
        for sock in self.app_sockets:
            sock.close()
        self.app_sockets = []

    def spawn(self, index: int) -> None:
        # Every socket of the app port: with the default interface, 0.0.0.0 and [::].
        handed = hand_on_sockets([(self.port, sock) for sock in self.app_sockets])
        env = dict(
            os.environ,
            **handed,
            **{
                PROCESS_INDEX_VARIABLE: str(index),
                PROCESS_DIR_VARIABLE: self.folder,
                MULTIPROCESS_VARIABLE: self.metrics_dir,
            },
        )
        self.slots.write(index, *(0 for _ in FIELDS))
        child = self.children[index] = subprocess.Popen(
            [sys.executable, *sys.orig_argv[1:]],
            env=env,
            pass_fds=tuple(sock.fileno() for sock in self.app_sockets),
        )
        self.started_at[index] = time.monotonic()
        logger.info("Started serving process %d (pid %d)", index, child.pid)

    # -- children that end -----------------------------------------------------------------

    def reap(self) -> None:
        """SIGCHLD: note every child that ended; replace it unless we are stopping."""
        from prometheus_client import multiprocess

        for index, child in enumerate(self.children):
            if child is None or child.poll() is None:
                continue
            if not self.state.started and not self.state.draining:
                continue  # start_serving reports it and fails the start-up
            self.children[index] = None
            multiprocess.mark_process_dead(child.pid, self.metrics_dir)
            if self.state.draining:
                continue
            lived = time.monotonic() - self.started_at[index]
            self.quick_deaths[index] = self.quick_deaths[index] + 1 if lived < CRASH_WINDOW else 0
            delay = min(RESTART_BACKOFF_MAX, 0.5 * (2 ** self.quick_deaths[index] - 1))
            logger.warning(
                "Serving process %d (pid %d) exited with code %s; starting a new one%s",
                index,
                child.pid,
                child.returncode,
                f" in {delay:.1f} s" if delay else "",
            )
            asyncio.get_running_loop().call_later(delay, self.respawn, index)

    def kill_hung_children(self) -> None:
        """Kill each serving process whose heartbeat stopped while it served (see
        HUNG_AFTER); reap() then starts a new one. One that is starting, draining or
        restarting in place says it does not serve, and is left alone."""
        if self.state.draining:
            return
        now = now_ms()
        for index, child in enumerate(self.children):
            if child is None or child.poll() is not None:
                continue
            row = self.slots.read(index)
            silent = (now - row["heartbeat_ms"]) / 1000
            if row["pid"] == child.pid and row["serving"] and silent > HUNG_AFTER:
                logger.error(
                    "Serving process %d (pid %d) wrote no heartbeat for %.0f s: its event "
                    "loop is stuck; killing it",
                    index,
                    child.pid,
                    silent,
                )
                child.kill()
        asyncio.get_running_loop().call_later(HUNG_CHECK_INTERVAL, self.kill_hung_children)

    def respawn(self, index: int) -> None:
        if not self.state.draining and self.children[index] is None:
            self.spawn(index)

    # -- exit ----------------------------------------------------------------------------

    async def stop_children(self, wait: float) -> None:
        running = [child for child in self.children if child is not None]
        for child in running:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait
        while any(child.poll() is None for child in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for child in running:
            if child.poll() is None:
                logger.warning("Serving process pid %d did not exit in time: killing it", child.pid)
                child.kill()
                child.wait()
