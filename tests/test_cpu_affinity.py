"""``--cpu-affinity``: by default every thread of a serving process runs on one core,
threads started later too; ``--processes 2`` puts its two on different cores; a core
that another process keeps busy is left for a quieter one; ``off`` leaves the threads
to the kernel. Observed in /proc, on real processes."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys

import requests
from test_processes import children_of

from conftest import wait_until


def cores_of_threads(pid: int) -> set[str]:
    """The Cpus_allowed_list of each thread of ``pid`` ("0", "0-1", ...)."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                text = status.read()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        found.add(re.search(r"^Cpus_allowed_list:\s*(\S+)", text, re.M).group(1))
    return found


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def needs_two_cores() -> list[int]:
    cores = sorted(os.sched_getaffinity(0))
    assert len(cores) >= 2, f"these tests need two CPU cores, this machine gives {cores}"
    return cores


def test_every_thread_runs_on_one_core(serve):
    needs_two_cores()
    server = serve()
    pid = server.process.pid
    [core] = cores_of_threads(pid)
    assert core.isdigit(), core
    assert f"; CPU {core}): " in server.output, server.output
    # Blocking requests grow the pool: the new threads start on the same core.
    before = thread_count(pid)
    with concurrent.futures.ThreadPoolExecutor(12) as executor:
        slow = list(
            executor.map(
                lambda _: requests.get(server.url("/slow/?seconds=1.5"), timeout=30), range(12)
            )
        )
    assert [response.status_code for response in slow] == [200] * 12
    assert thread_count(pid) > before
    assert cores_of_threads(pid) == {core}


def test_off_leaves_threads_to_the_kernel(serve):
    needs_two_cores()
    server = serve("--cpu-affinity", "off")
    everywhere = cores_of_threads(os.getpid()).pop()  # what this test may use: all of them
    assert cores_of_threads(server.process.pid) == {everywhere}
    assert "; CPU " not in server.output
    server_from_env = serve(env={"HURRICANE_CPU_AFFINITY": "OFF"})
    assert cores_of_threads(server_from_env.process.pid) == {everywhere}


def test_two_serving_processes_take_two_cores(serve):
    needs_two_cores()
    server = serve("--processes", "2")
    wait_until(
        lambda: len(re.findall(r"Serving process \d: serving on port", server.output)) == 2,
        30,
        "both serving processes",
        server,
    )
    children = sorted(children_of(server.process.pid))
    assert len(children) == 2, children
    [first], [second] = (cores_of_threads(child) for child in children)
    assert first != second
    # The supervisor, which serves no request, is left to the kernel.
    assert len(cores_of_threads(server.process.pid)) == 1
    assert "-" in next(iter(cores_of_threads(server.process.pid)))


def test_a_core_another_process_keeps_busy_is_left(serve):
    needs_two_cores()
    server = serve()
    pid = server.process.pid
    [core] = cores_of_threads(pid)
    spinner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass",
        ]
    )
    try:
        wait_until(
            lambda: cores_of_threads(pid) not in ({core}, set()),
            60,  # a look every 2-3 s, two crowded in a row; the other core half idle
            f"the server to leave CPU {core}",
            server,
        )
        [moved_to] = cores_of_threads(pid)
        assert re.search(
            rf"Moved to CPU {moved_to}: other processes used \d+% of CPU {core}", server.output
        ), server.output
        assert requests.get(server.url("/hello/"), timeout=10).text == "Hello from Hurricane"
    finally:
        spinner.kill()
        spinner.wait()


def test_cpu_quota_reads_the_cgroup_limit(tmp_path):
    from hurricane.serve.affinity import cpu_quota

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(str(v2)) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(str(v2)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(str(v1)) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(str(v1)) is None
    assert cpu_quota(str(tmp_path / "none")) is None


def test_a_move_needs_two_crowded_looks_and_a_minute_since_the_last(monkeypatch, caplog):
    """One busy look does not move the process; two in a row do; then no move for a
    minute however crowded; the first move is logged at INFO, later ones at DEBUG."""
    from hurricane.serve import affinity

    clock = [1000.0]
    monkeypatch.setattr(affinity.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(affinity, "read_core_times", lambda: {})
    keeper = affinity.CoreKeeper([0, 1])
    keeper.core = 0
    looks = iter([])
    monkeypatch.setattr(keeper, "_quieter_core", lambda: next(looks))
    moves: list[int] = []

    def move_to(core: int) -> None:
        moves.append(core)
        keeper.core = core

    monkeypatch.setattr(keeper, "move_to", move_to)

    def look(crowded: bool) -> int | None:
        nonlocal looks
        other = 1 - keeper.core
        looks = iter([(other, (0.6, 0.9)) if crowded else (None, (0.1, 0.0))])
        clock[0] += 2.5
        return keeper.check()

    caplog.set_level("DEBUG", logger="hurricane.server.general")
    assert look(True) is None  # once: a busy moment
    assert look(False) is None
    assert look(True) is None
    assert look(True) == 1  # twice in a row: moved
    assert "Moved to CPU 1: other processes used 60% of CPU 0, and CPU 1 was 90% idle" in (
        caplog.text
    )
    assert [r.levelname for r in caplog.records if "Moved" in r.message] == ["INFO"]
    # Crowded at every look for the next minute: no move.
    assert [look(True) for _ in range(23)] == [None] * 23
    assert moves == [1]
    clock[0] = keeper.moved_at + affinity.MOVE_INTERVAL
    assert look(True) == 0
    assert moves == [1, 0]
    assert [r.levelname for r in caplog.records if "Moved" in r.message] == ["INFO", "DEBUG"]
