"""The adaptive WSGI worker pool: it grows past ``--workers`` while its threads wait
(never while they compute), up to ``--max-workers``, and idle extra threads retire,
closing their database connections."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import TEST_PROJECT, base_env
from hurricane.config.options import SERVE_OPTIONS, OptionError, resolve
from hurricane.django.pool import WorkerPool


def settings(**values):
    import types

    return types.SimpleNamespace(**values)


def run_all(pool: WorkerPool, task, count: int) -> list:
    """Submit ``task`` ``count`` times; the outcomes (a value or the exception), in
    the order the tasks finished."""
    outcomes: list = []
    done = threading.Semaphore(0)

    def run() -> None:
        try:
            outcomes.append(task())
        except Exception as error:
            outcomes.append(error)
        finally:
            done.release()

    for _ in range(count):
        pool.submit(run)
    for _ in range(count):
        assert done.acquire(timeout=60), "tasks did not finish"
    return outcomes


def pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name + "-") and t.is_alive()]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- the pool itself ------------------------------------------------------------------------


def test_blocked_threads_make_the_pool_grow_to_run_every_task_at_once():
    pool = WorkerPool(2, name="grow-test", max_size=16)
    try:
        barrier = threading.Barrier(16)
        # Each task blocks until all 16 run at the same time: impossible with 2 threads.
        outcomes = run_all(pool, lambda: barrier.wait(timeout=10), 16)
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        assert pool.threads == 16
    finally:
        pool.shutdown(wait=10)
    # shutdown stops the grown threads and the monitor too.
    assert pool_threads("grow-test") == []


def test_a_pool_whose_max_is_its_size_never_grows():
    pool = WorkerPool(2, name="fixed-test", max_size=2)
    try:
        barrier = threading.Barrier(3)
        outcomes = run_all(pool, lambda: barrier.wait(timeout=1.5), 3)
        assert all(isinstance(o, threading.BrokenBarrierError) for o in outcomes), outcomes
        assert pool.threads == 2
        assert len(pool_threads("fixed-test")) == 2  # no monitor thread either
    finally:
        pool.shutdown(wait=10)


def test_a_max_below_the_size_counts_as_the_size():
    pool = WorkerPool(3, name="below-test", max_size=1)
    try:
        assert (pool.size, pool.max_size, pool.threads) == (3, 3, 3)
    finally:
        pool.shutdown(wait=10)


def test_computing_threads_do_not_make_the_pool_grow():
    pool = WorkerPool(2, name="cpu-test", max_size=16)
    largest = [pool.threads]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.002):
            largest[0] = max(largest[0], pool.threads)

    def compute() -> None:
        # About 1 s of CPU in all, with requests waiting the whole time.
        end = time.thread_time() + 0.06
        while time.thread_time() < end:
            pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_all(pool, compute, 16)
    finally:
        stop.set()
        watcher.join()
        pool.shutdown(wait=10)
    # Computing work keeps the process near a core (or, on a machine busy with other
    # work, its threads waiting for one), so the pool stays at its size. Growth is
    # proportional to the CPU left unused and needs two windows in a row below 85%:
    # a misjudged moment could add a thread or two, never 14.
    assert largest[0] <= 4, largest[0]


def test_a_grown_pool_shrinks_back_when_its_work_turns_to_computing():
    pool = WorkerPool(2, name="turn-test", max_size=16, idle_timeout=600)
    stop = threading.Event()

    def compute() -> None:
        end = time.thread_time() + 0.01
        while time.thread_time() < end:
            pass

    def feed() -> None:
        while not stop.is_set():
            if pool.backlog < 32:
                pool.submit(compute)
            else:
                time.sleep(0.005)

    try:
        barrier = threading.Barrier(16)
        outcomes = run_all(pool, lambda: barrier.wait(timeout=10), 16)
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        assert pool.threads == 16
        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            # Long before the idle timeout: the CPU is saturated, and fewer threads
            # finish as many tasks per second.
            wait_for(lambda: pool.threads == 2, 20, "the pool to shrink back to 2 threads")
        finally:
            stop.set()
            feeder.join()
    finally:
        pool.shutdown(wait=10)


def test_extra_threads_retire_when_idle():
    pool = WorkerPool(2, name="idle-test", max_size=8, idle_timeout=0.5)
    try:
        barrier = threading.Barrier(8)
        outcomes = run_all(pool, lambda: barrier.wait(timeout=10), 8)
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        assert pool.threads == 8
        wait_for(lambda: pool.threads == 2, 10, "the pool to shrink back to 2 threads")
        wait_for(lambda: len(pool_threads("idle-test")) == 3, 10, "extra threads to exit")
        # Back at its size, the pool still works, and grows again when needed.
        assert run_all(pool, lambda: "ok", 4) == ["ok"] * 4
        barrier = threading.Barrier(6)
        outcomes = run_all(pool, lambda: barrier.wait(timeout=10), 6)
        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    finally:
        pool.shutdown(wait=10)


RETIRING_THREADS_CLOSE_CONNECTIONS = """
import json, threading, time
import django
django.setup()
from django.db import connections
from hurricane.django.pool import WorkerPool

pool = WorkerPool(1, max_size=4, idle_timeout=0.5)
barrier = threading.Barrier(4)
opened = []  # (thread, that thread's connection wrapper)

def task():
    connection = connections["default"]
    connection.ensure_connection()
    opened.append((threading.current_thread(), connection))
    barrier.wait(timeout=10)

for _ in range(4):
    pool.submit(task)
deadline = time.monotonic() + 20
while (len(opened) < 4 or pool.threads > 1 or sum(t.is_alive() for t, _ in opened) > 1):
    assert time.monotonic() < deadline, (len(opened), pool.threads)
    time.sleep(0.02)
print(json.dumps([
    {"alive": thread.is_alive(), "closed": connection.connection is None}
    for thread, connection in opened
]))
"""


def test_a_retiring_thread_closes_its_database_connections(tmp_path):
    env = base_env(tmp_path, DJANGO_SETTINGS_MODULE="testproject.settings")
    result = subprocess.run(
        [sys.executable, "-c", RETIRING_THREADS_CLOSE_CONNECTIONS],
        cwd=TEST_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    threads = json.loads(result.stdout)
    # Three threads retired, each with its connection closed; the one that stays
    # keeps its connection for the next request.
    assert sorted(threads, key=lambda t: t["alive"]) == [
        {"alive": False, "closed": True},
        {"alive": False, "closed": True},
        {"alive": False, "closed": True},
        {"alive": True, "closed": False},
    ]


# -- end to end ------------------------------------------------------------------------------


def get_concurrently(server, path: str, count: int) -> tuple[float, list[requests.Response]]:
    with concurrent.futures.ThreadPoolExecutor(count) as executor:
        began = time.monotonic()
        responses = list(
            executor.map(lambda _: requests.get(server.url(path), timeout=60), range(count))
        )
        return time.monotonic() - began, responses


def test_blocking_views_are_not_capped_by_the_default_workers(serve):
    server = serve()
    elapsed, responses = get_concurrently(server, "/slow/?seconds=0.5", 40)
    assert [r.status_code for r in responses] == [200] * 40
    # 6 fixed workers (the default on 2 CPUs) would need 40 x 0.5 s / 6 = 3.3 s at best.
    assert elapsed < 2.5, elapsed


def test_max_workers_equal_to_workers_keeps_the_fixed_cap(serve):
    server = serve("--workers", "2", "--max-workers", "2")
    elapsed, responses = get_concurrently(server, "/slow/?seconds=0.5", 6)
    assert [r.status_code for r in responses] == [200] * 6
    # Two threads: six half-second requests need three rounds.
    assert elapsed >= 1.45, elapsed


# -- the option ------------------------------------------------------------------------------


def test_max_workers_default_environment_and_setting():
    assert resolve(SERVE_OPTIONS, {}, settings(), {}).max_workers == 64
    from_env = resolve(SERVE_OPTIONS, {}, settings(), {"HURRICANE_MAX_WORKERS": "12"})
    assert from_env.max_workers == 12
    assert from_env.sources["max_workers"] == "environment HURRICANE_MAX_WORKERS"
    from_setting = resolve(SERVE_OPTIONS, {}, settings(HURRICANE_MAX_WORKERS=20), {})
    assert from_setting.max_workers == 20


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
def test_bad_max_workers_is_one_clear_line(value):
    with pytest.raises(OptionError) as raised:
        resolve(SERVE_OPTIONS, {}, settings(), {"HURRICANE_MAX_WORKERS": value})
    assert str(raised.value) == (
        f"invalid value {value!r} for --max-workers (from environment "
        "HURRICANE_MAX_WORKERS): expected a whole number of at least 1"
    )
