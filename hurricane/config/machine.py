"""What the machine gives this process: the cores it may run on (its cpuset) and
the CPU time it may use (its container's CPU limit). Read where a default depends on
them (``--workers``) and by ``--processes`` and ``--cpu-affinity``."""

from __future__ import annotations

import os


def cores_allowed() -> list[int]:
    """The cores this process may run on (its cpuset); empty where the platform
    cannot pin threads (macOS, Windows)."""
    if not hasattr(os, "sched_getaffinity") or not os.path.isdir("/proc/self/task"):
        return []
    return sorted(os.sched_getaffinity(0))


def cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The cores' worth of CPU time the container may use (its CPU limit, from the
    cgroup's CFS quota, v2 or v1); None without a quota."""
    try:
        with open(os.path.join(root, "cpu.max")) as cpu_max:  # cgroup v2
            quota, period = cpu_max.read().split()[:2]
    except (OSError, ValueError):
        try:  # cgroup v1
            with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as quota_file:
                quota = quota_file.read().strip()
            with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as period_file:
                period = period_file.read().strip()
        except OSError:
            return None
    try:
        if quota in ("max", "-1") or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except ValueError:
        return None


def usable_cores() -> float:
    """How many cores this process can keep busy: its cpuset, capped by the CPU limit."""
    cores = float(len(cores_allowed()) or os.cpu_count() or 1)
    quota = cpu_quota()
    return min(cores, quota) if quota is not None else cores
