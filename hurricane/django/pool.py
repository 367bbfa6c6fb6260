"""The worker pool running synchronous Django code, and how it adapts its size.

A base of ``--workers`` threads always runs; the pool grows up to ``--max-workers``
only while its threads wait (I/O, sleep, locks) rather than compute, and shrinks
back when they compute or sit idle. ``backlog`` is what readiness counts.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

logger = logging.getLogger("hurricane.server.general")


# The adaptive pool's monitor looks at the queue this often, and judges the CPU over
# windows of WINDOW seconds: a busy instant is no reason to grow.
MONITOR_INTERVAL = 0.025
WINDOW = 0.1
# Below this share of a core, the process's threads mostly wait (sleep, sockets, locks)
# and more of them add throughput. Near a core they mostly compute, and with the GIL
# more runnable threads only contend for it (-15% on a hello-world view with 64
# threads instead of 6).
GROW_BELOW_CPU_SHARE = 0.85
# Between this and GROW_BELOW_CPU_SHARE, two windows in a row must say "waiting": one
# window of a computing process can fall short of a core (a collection, a neighbour).
CLEARLY_WAITING_CPU_SHARE = 0.5
# Growth aims at the thread count that would use this share, judging by what the
# current threads used: proportional, so mostly-computing work grows by little.
TARGET_CPU_SHARE = 0.95
# Saturated for this long with threads above the base: keep a quarter of the threads
# (not fewer than the base), so that blocking work followed by computing work does not
# leave 64 threads contending for the GIL.
SHRINK_ABOVE_CPU_SHARE = 0.97
SHRINK_AFTER = 0.3
# Saturated is not always computing: blocking work served by many threads can use a
# whole core too, and fewer threads would serve less. So a shrink is a trial: if over
# the next SHRINK_TRIAL seconds the pool finishes less than this share of the tasks
# per second of before, the threads come back, and the next trial waits SHRINK_BACKOFF
# seconds (doubling up to SHRINK_BACKOFF_MAX while trials fail), unless the tasks per
# second rise by a quarter: other work, to be judged afresh.
SHRINK_TRIAL = 0.3
SHRINK_KEEPS_THROUGHPUT = 0.75
SHRINK_BACKOFF = 1.0
SHRINK_BACKOFF_MAX = 8.0
# Threads above the base retire once the pool has not needed them for this long.
IDLE_TIMEOUT = 30.0


class CpuSample(NamedTuple):
    wall: float
    process: float  # CPU seconds of every thread of this process
    idle: float | None  # idle CPU seconds of the whole machine (Linux), if read
    # Per thread (Linux), if read: when, and seconds on a CPU plus seconds runnable but
    # waiting for one.
    demand: dict[str, tuple[float, float]] | None
    throttled: float  # seconds the cgroup's CPU quota held the container back


class CpuMeter:
    """How much of a core the process wanted between two samples.

    Mostly the CPU time it used: the GIL lets Python code use about one core. That
    misleads only where the process could not have had a whole core: on a machine kept
    busy by other processes, a process that computes gets less than a core and must
    not pass for one that waits. There (Linux), each thread's scheduler statistics add
    the time it was runnable but had no CPU; this sum counts threads that waited at the
    same time twice, so it errs towards "computing": not growing. A cgroup v2 CPU quota
    (a Kubernetes CPU limit) that held the process back means it wanted more than it
    got.

    Each file read releases the GIL, and getting it back from busy threads takes
    milliseconds each: a sample reads only what the last window needed (``detail``).
    """

    PROCESS, MACHINE, THREADS = range(3)

    def __init__(
        self,
        proc_stat: str = "/proc/stat",
        tasks: str = "/proc/self/task",
        cgroup_cpu_stat: str = "/sys/fs/cgroup/cpu.stat",
    ) -> None:
        self.proc_stat = proc_stat if os.path.exists(proc_stat) else None
        self.tasks = tasks if os.path.isdir(tasks) else None
        self.cgroup_cpu_stat = cgroup_cpu_stat if os.path.exists(cgroup_cpu_stat) else None
        self.ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.detail = self.MACHINE

    def sample(self) -> CpuSample:
        return CpuSample(
            time.monotonic(),
            time.process_time(),
            self._machine_idle() if self.detail >= self.MACHINE else None,
            self._demand() if self.detail >= self.THREADS else None,
            self._throttled(),
        )

    def share(self, first: CpuSample, last: CpuSample) -> float | None:
        """Cores wanted between the samples; None when the samples lack the detail to
        tell (the next one will have it)."""
        wall = last.wall - first.wall
        if wall <= 0 or last.throttled > first.throttled:
            self.detail = self.PROCESS
            return 1.0
        used = (last.process - first.process) / wall
        if used >= GROW_BELOW_CPU_SHARE or self.proc_stat is None:
            self.detail = self.PROCESS
            return used
        if first.idle is None or last.idle is None:
            self.detail = self.MACHINE
            return None
        # /proc/stat counts in 10 ms steps: "a whole core" leaves some slack.
        if used + (last.idle - first.idle) / wall >= 0.9 or self.tasks is None:
            self.detail = self.MACHINE
            return used
        self.detail = self.THREADS
        if first.demand is None or last.demand is None:
            return None
        # Each thread over its own interval: reading the files takes a while when other
        # threads hold the GIL. A thread that began or ended in between is left out.
        wanted = 0.0
        for thread, (read_at, seconds) in last.demand.items():
            if thread in first.demand:
                first_read_at, first_seconds = first.demand[thread]
                if read_at > first_read_at:
                    wanted += (seconds - first_seconds) / (read_at - first_read_at)
        return max(used, wanted)

    def _machine_idle(self) -> float | None:
        if self.proc_stat is None:
            return None
        try:
            with open(self.proc_stat, "rb") as stat:
                fields = stat.readline().split()
            # cpu  user nice system idle iowait ...: an iowait CPU is an idle one.
            return (int(fields[4]) + int(fields[5])) / self.ticks_per_second
        except (OSError, IndexError, ValueError):
            return None

    def _demand(self) -> dict[str, tuple[float, float]] | None:
        if self.tasks is None:
            return None
        try:
            threads = os.listdir(self.tasks)
        except OSError:
            return None
        demand = {}
        for thread in threads:
            try:
                with open(f"{self.tasks}/{thread}/schedstat", "rb") as stat:
                    on_cpu, waiting, _ = stat.read().split()
            except (OSError, ValueError):
                continue  # the thread just ended
            demand[thread] = (time.monotonic(), (int(on_cpu) + int(waiting)) / 1e9)
        return demand

    def _throttled(self) -> float:
        if self.cgroup_cpu_stat is None:
            return 0.0
        try:
            with open(self.cgroup_cpu_stat, "rb") as stat:
                for line in stat:
                    if line.startswith(b"throttled_usec "):
                        return int(line.split()[1]) / 1e6
        except (OSError, IndexError, ValueError):
            pass
        return 0.0


class _Worker:
    __slots__ = ("thread", "busy", "done")

    def __init__(self, work: Callable[[_Worker], None], name: str) -> None:
        self.thread = threading.Thread(target=work, args=(self,), name=name, daemon=True)
        self.busy = False
        self.done = 0  # tasks finished; written by its own thread only, so no lock


class WorkerPool:
    """Threads taking work from one queue: ``size`` of them always, more (up to
    ``max_size``) while they wait on something other than the CPU.

    ``backlog`` is the number of items waiting for a free thread: exactly the
    requests that readiness must count (idle keep-alive connections are not in it).

    With ``max_size`` above ``size`` (a value below counts as ``size``: a fixed pool),
    a monitor thread looks at the queue every ``MONITOR_INTERVAL`` and at the CPU
    every ``WINDOW`` seconds (see :class:`CpuMeter`):

    - grow: items waited at every look in the window and the process wanted less than
      ``GROW_BELOW_CPU_SHARE`` of a core (in two windows in a row, unless less than
      ``CLEARLY_WAITING_CPU_SHARE``): the threads mostly wait, so the pool grows to
      the count that would want ``TARGET_CPU_SHARE``, at most one more thread per
      waiting item, at most ``max_size``. Computing work keeps the process near a core
      and the pool at its size.
    - shrink when computing: above ``SHRINK_ABOVE_CPU_SHARE`` for ``SHRINK_AFTER``
      seconds in a row, three quarters of the threads retire (down to ``size`` at
      most), on trial: if over the next ``SHRINK_TRIAL`` seconds the tasks finished
      per second drop below ``SHRINK_KEEPS_THROUGHPUT`` of before, the threads were
      waiting after all (many blocking requests can keep a core busy too); they come
      back, and the next trial waits (``SHRINK_BACKOFF``, doubling).
    - shrink when idle: threads that the pool has not needed at once (running work or
      work waiting) for ``idle_timeout`` seconds retire.

    A retiring thread first closes its own database connections, which CONN_MAX_AGE
    would otherwise keep open until the process ends. Threads are interchangeable:
    whichever notices the surplus first (after its task, or waking up idle) retires.
    """

    def __init__(
        self,
        size: int,
        name: str = "hurricane-worker",
        max_size: int | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.size = size
        self.max_size = max(size, max_size or size)
        self.name = name
        self.idle_timeout = idle_timeout
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._surplus = 0  # threads asked to retire, not yet gone
        self._retired_done = 0  # tasks finished by threads that retired
        self._numbered = 0
        self._closing = threading.Event()
        # Idle threads of an adaptive pool wake up now and then to see whether they are
        # surplus; those of a fixed pool never are.
        self._idle_wake = min(1.0, idle_timeout / 2) if self.max_size > size else None
        with self._lock:
            for _ in range(size):
                self._start_worker()
        self._monitor: threading.Thread | None = None
        if self.max_size > size:
            self._monitor = threading.Thread(
                target=self._watch, name=f"{name}-monitor", daemon=True
            )
            self._monitor.start()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def threads(self) -> int:
        """Threads serving now, not counting those asked to retire."""
        return len(self._workers) - self._surplus

    @property
    def busy(self) -> int:
        """Threads running a task now (read from any thread: a copy of the list)."""
        return sum(1 for worker in list(self._workers) if worker.busy)

    def submit(self, function: Callable, *args: Any) -> None:
        self._queue.put((function, args))

    def _start_worker(self) -> None:  # under self._lock
        worker = _Worker(self._work, f"{self.name}-{self._numbered}")
        self._numbered += 1
        self._workers.append(worker)
        worker.thread.start()

    def _work(self, worker: _Worker) -> None:
        get, idle_wake = self._queue.get, self._idle_wake
        while True:
            try:
                item = get(timeout=idle_wake)
            except queue.Empty:
                pass
            else:
                if item is None:
                    return
                function, args = item
                worker.busy = True
                try:
                    function(*args)
                except BaseException:  # a worker must survive whatever the work raises
                    logger.exception("Unhandled error in worker thread")
                worker.busy = False
                worker.done += 1
            if self._surplus and self._retire(worker):
                return

    def _retire(self, worker: _Worker) -> bool:
        with self._lock:
            if self._surplus <= 0:
                return False
            self._surplus -= 1
            self._workers.remove(worker)
            self._retired_done += worker.done
        close_database_connections()
        return True

    def _resize(self, target: int) -> None:
        target = min(self.max_size, max(self.size, target))
        with self._lock:
            if self._closing.is_set():
                return
            staying = len(self._workers) - self._surplus
            if target < staying:
                self._surplus += staying - target
            elif target > staying:
                kept = min(self._surplus, target - staying)
                self._surplus -= kept
                for _ in range(target - staying - kept):
                    self._start_worker()
        if target != staying:
            logger.debug("Worker pool %s: %d -> %d threads", self.name, staying, target)

    def _finished(self) -> int:
        with self._lock:  # a thread retiring meanwhile would count twice or not at all
            return self._retired_done + sum(worker.done for worker in self._workers)

    def _watch(self) -> None:
        try:
            self._adapt()
        except Exception:  # the pool goes on serving with the threads it has
            logger.exception("The worker pool's monitor failed; the pool stops adapting")

    def _adapt(self) -> None:
        meter = CpuMeter()
        window_start: CpuSample | None = None  # None: nothing to decide, nothing sampled
        finished_at_start = 0
        waited_throughout = False  # items waited at every look since window_start
        last_share = 1.0  # of the last window judged; 1.0 when there was none
        # While the last window computed, growth is off the table for the next: one look
        # per window then, since every wake-up waits for the GIL behind busy threads.
        coarse = False
        # Windows as (tasks finished, seconds): saturated ones in a row, and those since
        # a trial shrink from ``trial`` (threads before, tasks per second before).
        hot: list[tuple[int, float]] = []
        trial: tuple[int, float] | None = None
        trial_windows: list[tuple[int, float]] = []
        trial_hot = False
        backoff, no_trial_before, failed_rate = SHRINK_BACKOFF, 0.0, 0.0
        # The most threads needed at once (running or waited for) in each quarter of
        # the last idle_timeout.
        recent_peaks: collections.deque[int] = collections.deque(maxlen=4)
        quarter_peak, quarter_began = 0, time.monotonic()
        while not self._closing.wait(WINDOW if coarse else MONITOR_INTERVAL):
            backlog = self._queue.qsize()
            threads = self.threads
            now = time.monotonic()
            if threads > self.size:
                needed = sum(worker.busy for worker in tuple(self._workers)) + backlog
                quarter_peak = max(quarter_peak, needed)
                if now - quarter_began >= self.idle_timeout / 4:
                    recent_peaks.append(quarter_peak)
                    quarter_peak, quarter_began = needed, now
                    if len(recent_peaks) == recent_peaks.maxlen and max(recent_peaks) < threads:
                        self._resize(max(recent_peaks))
            else:
                recent_peaks.clear()
                quarter_peak, quarter_began = 0, now
            if window_start is None:
                if backlog or threads > self.size:
                    window_start, finished_at_start = meter.sample(), self._finished()
                    waited_throughout, hot, last_share = bool(backlog), [], 1.0
                continue
            waited_throughout = waited_throughout and bool(backlog)
            if now - window_start.wall < WINDOW - MONITOR_INTERVAL / 2:
                continue
            sample, finished = meter.sample(), self._finished()
            share = meter.share(window_start, sample)
            window = (finished - finished_at_start, sample.wall - window_start.wall)
            waited = waited_throughout
            window_start, finished_at_start, waited_throughout = sample, finished, bool(backlog)
            if share is None:  # the next window starts with the detail this one lacked
                window_start = meter.sample()
            previous_share, last_share = last_share, 1.0 if share is None else share
            coarse = share is not None and share >= GROW_BELOW_CPU_SHARE
            saturated = share is not None and share >= SHRINK_ABOVE_CPU_SHARE
            threads = self.threads
            if trial is not None:
                trial_windows.append(window)
                trial_hot = trial_hot and saturated
                if _seconds(trial_windows) < SHRINK_TRIAL:
                    continue
                (threads_before, rate_before), trial = trial, None
                if _rate(trial_windows) < SHRINK_KEEPS_THROUGHPUT * rate_before:
                    self._resize(threads_before)
                    no_trial_before, failed_rate = time.monotonic() + backoff, rate_before
                    backoff = min(SHRINK_BACKOFF_MAX, 2 * backoff)
                    hot = []
                    continue
                backoff = SHRINK_BACKOFF
                # Still saturated with fewer threads: the trial's windows call for the next.
                hot = trial_windows if trial_hot else []
            elif share is None:
                continue
            elif (
                waited
                and share < GROW_BELOW_CPU_SHARE
                and (share < CLEARLY_WAITING_CPU_SHARE or previous_share < GROW_BELOW_CPU_SHARE)
                and threads < self.max_size
            ):
                wanted = math.ceil(threads * TARGET_CPU_SHARE / max(share, 0.05))
                self._resize(min(threads + backlog, wanted))
                hot = []
            else:
                hot = [*hot, window] if saturated else []
                while _seconds(hot[1:]) >= SHRINK_AFTER:
                    hot.pop(0)
            if (
                _seconds(hot) >= SHRINK_AFTER
                and threads > self.size
                and (time.monotonic() >= no_trial_before or _rate(hot) > 1.25 * failed_rate)
            ):
                trial, trial_windows, trial_hot = (threads, _rate(hot)), [], True
                self._resize(threads // 4)
                hot = []
            elif not backlog and trial is None and self.threads <= self.size:
                window_start, coarse = None, False

    def shutdown(self, wait: float = 0.0) -> None:
        """Stop every thread (grown ones too) once it finishes its task; wait at most
        ``wait`` seconds in all."""
        with self._lock:
            self._closing.set()
            workers = list(self._workers)
        for _ in workers:
            self._queue.put(None)
        deadline = time.monotonic() + wait
        for worker in workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        if self._monitor is not None:
            self._monitor.join(max(0.0, deadline - time.monotonic()))


def _seconds(windows: list[tuple[int, float]]) -> float:
    return sum(window[1] for window in windows)


def _rate(windows: list[tuple[int, float]]) -> float:
    """Tasks finished per second over (tasks finished, seconds) windows."""
    seconds = sum(window[1] for window in windows)
    return sum(window[0] for window in windows) / seconds if seconds > 0 else 0.0


def close_database_connections() -> None:
    """Close the calling thread's Django database connections (each thread has its own)."""
    try:
        from django.conf import settings

        if not settings.configured:
            return
        from django.db import connections

        connections.close_all()
    except Exception:
        logger.exception("Error closing a retiring worker's database connections")
