"""Keeps the threads of a serving process on one CPU core (``--cpu-affinity auto``).

The GIL lets one thread of a process run Python at a time, so a serving process uses
about one core however many it may run on. Left to the kernel, though, its event
loop and worker threads land on different cores, and every request hands the GIL and
its data from one core to the other, waking an idle core to do so. On the 2-core
benchmark machine (a virtual machine), one process served /plain at 3,750-4,860
req/s spread over both cores and at 6,730-8,000 pinned to one, at half the CPU time
per request; /db doubled, /sleep gained 5-7% (bench/results/profile-plain.md).

A pinned process cannot move away from a core that other processes keep busy, so
this checks every few seconds how much of its core the others took, and moves all
its threads to a core that has more to spare: when the core stayed crowded at two
looks in a row, at most once a minute. The first move is logged at INFO, later ones
at DEBUG.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import NamedTuple

from hurricane.config.machine import cores_allowed, cpu_quota, usable_cores

logger = logging.getLogger("hurricane.server.general")

__all__ = ["CoreKeeper", "cores_allowed", "cpu_quota", "usable_cores"]

# How often, and over what window, the others' use of the core is judged; jittered
# so that processes that share a core do not all move at the same moment.
CHECK_INTERVAL = 2.0
CHECK_JITTER = 1.0
# Other processes took more than this share of the core over a window...
CROWDED_SHARE = 0.3
# ...and another core had at least this share idle: move there.
SPARE_SHARE = 0.5
# A move needs the core crowded at this many looks in a row (one busy moment is not
# a neighbour that stays) and at least this long since the last move: on a busy
# 2-core machine, processes moved every few seconds, each move logged.
CROWDED_LOOKS = 2
MOVE_INTERVAL = 60.0
# The first core of a process of its own: the idlest during start-up (shares within
# one bucket count as equal, and the tie is broken from a random starting point).
IDLE_BUCKET = 0.1


class CoreTimes(NamedTuple):
    busy: float  # seconds the core ran anything
    idle: float


def read_core_times(path: str = "/proc/stat") -> dict[int, CoreTimes]:
    ticks = os.sysconf("SC_CLK_TCK")
    times = {}
    with open(path) as stat:
        for line in stat:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *fields = line.split()
            values = [int(field) for field in fields]
            idle = values[3] + values[4]  # idle and iowait
            # user, nice, system, irq, softirq, steal (guest time is within user)
            busy = sum(values[:3]) + sum(values[5:8])
            times[int(name[3:])] = CoreTimes(busy / ticks, idle / ticks)
    return times


def pin_threads(core: int) -> None:
    """Every thread of this process onto ``core``; threads started later inherit it
    from the thread that starts them."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), {core})
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


class CoreKeeper:
    """Pins this process to one core, and moves it when others crowd that core.

    A process of its own (``index`` None) starts on the core idlest during its
    start-up. The serving processes of ``--processes`` (``index`` n) spread over the
    cores instead: the n-th takes the n-th core from a starting point ``seed`` that
    all of them share. Idleness cannot spread them, since each reads it at its own
    moment (the one that started first has made its core busy).
    """

    def __init__(self, cores: list[int], index: int | None = None, seed: int | None = None) -> None:
        self.cores = cores
        self.index = index
        self.random = random.Random(seed)  # shared by siblings: where they start
        self.jitter = random.Random()  # their own: when each looks
        self.core: int | None = None
        self.last: tuple[float, float, dict[int, CoreTimes]] | None = None
        self.crowded_looks = 0
        self.moved_at: float | None = None  # the last move after the first core
        # Read as start-up begins, so that the first core is chosen by how idle each
        # was during start-up, with no wait just to measure.
        self.since = read_core_times()

    @classmethod
    def for_mode(
        cls, mode: str, index: int | None = None, seed: int | None = None
    ) -> CoreKeeper | None:
        """A keeper for ``--cpu-affinity``; None when there is nothing to keep: off,
        a single core, or no /proc/stat to tell the cores' load."""
        cores = cores_allowed() if mode == "auto" else []
        if len(cores) < 2:
            return None
        try:
            return cls(cores, index, seed)
        except (OSError, ValueError) as error:
            logger.warning("--cpu-affinity auto: the cores' load cannot be read (%s)", error)
            return None

    def pin_first(self) -> bool:
        """Pin to the first core; False (and the threads left to the kernel) where
        the system refuses."""
        try:
            start = self.random.randrange(len(self.cores))
            ring = self.cores[start:] + self.cores[:start]
            if self.index is not None:
                self.move_to(ring[self.index % len(ring)])
                return True
            after = read_core_times()
            idle = {core: after[core].idle - self.since[core].idle for core in self.cores}
            longest = max(idle.values()) or 1.0
            ranked = sorted(ring, key=lambda core: -round(idle[core] / longest / IDLE_BUCKET))
            self.move_to(ranked[0])
        except (OSError, ValueError, KeyError) as error:
            logger.warning("--cpu-affinity auto: the threads cannot be pinned (%s)", error)
            return False
        return True

    def move_to(self, core: int) -> None:
        pin_threads(core)
        self.core = core
        self.last = (time.monotonic(), time.process_time(), read_core_times())

    def release(self) -> None:
        """Give the calling thread all the cores again, before this process execs
        itself (restart in place): the new image starts with this thread's cores,
        and must find them all to choose from."""
        os.sched_setaffinity(0, self.cores)

    def next_check_in(self) -> float:
        return CHECK_INTERVAL + self.jitter.uniform(0.0, CHECK_JITTER)

    def check(self) -> int | None:
        """Move to a core with more to spare if others crowded this one at the last
        CROWDED_LOOKS looks and the last move is MOVE_INTERVAL ago; the new core, or
        None when it stays."""
        try:
            target, others = self._quieter_core()
            if target is None:
                self.crowded_looks = 0
                return None
            self.crowded_looks += 1
            now = time.monotonic()
            if self.crowded_looks < CROWDED_LOOKS or (
                self.moved_at is not None and now - self.moved_at < MOVE_INTERVAL
            ):
                return None
            was, first = self.core, self.moved_at is None
            self.move_to(target)
            self.crowded_looks, self.moved_at = 0, now
        except (OSError, ValueError, KeyError) as error:  # a passing failure: next time
            logger.warning("--cpu-affinity auto: the look at the cores failed (%s)", error)
            return None
        logger.log(
            logging.INFO if first else logging.DEBUG,
            "Moved to CPU %d: other processes used %d%% of CPU %d, and CPU %d was %d%% idle%s",
            target,
            round(others[0] * 100),
            was,
            target,
            round(others[1] * 100),
            "; later moves, at most one a minute, are logged at DEBUG" if first else "",
        )
        return target

    def _quieter_core(self) -> tuple[int | None, tuple[float, float]]:
        """The core to move to, if any, with the others' share of this core and the
        idle share of that one since the last look."""
        times = read_core_times()
        now, used = time.monotonic(), time.process_time()
        was, self.last = self.last, (now, used, times)
        if was is None or self.core is None or now <= was[0]:
            return None, (0.0, 0.0)
        wall, before = now - was[0], was[2]
        busy = times[self.core].busy - before[self.core].busy
        others = (busy - (used - was[1])) / wall
        if others <= CROWDED_SHARE:
            return None, (others, 0.0)
        spare = {
            core: (times[core].idle - before[core].idle) / wall
            for core in self.cores
            if core != self.core
        }
        best = max(spare, key=spare.__getitem__)
        if spare[best] < SPARE_SHARE:
            return None, (others, spare[best])
        return best, (others, spare[best])
