"""The autoscaling simulation (bench/autoscale.py) on small curves: what a user reads
off its tables must follow from how Kubernetes' HPA works."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_simulation():
    spec = importlib.util.spec_from_file_location("autoscale", ROOT / "bench" / "autoscale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["autoscale"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sim = load_simulation()

# An I/O-bound pod as the benchmark measured one: 64 threads, 51 ms per request,
# 0.28 ms of CPU per request (about 1,250 requests/s at most, 0.35 cores).
IO = sim.Profile("io", "a 50 ms view", 64, "threads", service=0.0512, cpu_per_request=0.000282)
CLUSTER = sim.Cluster(min_replicas=1, max_replicas=20, cpu_request=0.25, pull=10.0)
BACKLOG = sim.Signal("backlog", 0.7 * 64, 0.7)
CPU = sim.Signal("cpu", 0.7)


def step_curve(before: float, after: float, at: float, seconds: float):
    return sim.Curve("step", seconds, lambda t: after if t >= at else before, "a step")


def first_second(run, pods: int) -> int | None:
    """The first second at which ``pods`` pods or more are ready."""
    return next((s for s, ready in enumerate(run.ready) if ready >= pods), None)


def run_of(signal, cluster=CLUSTER, curve=None, seed=1):
    scenario = sim.Scenario(signal.label(), (signal,), cluster, IO)
    return sim.simulate(scenario, curve, step=0.1, seed=seed)


def test_the_backlog_scales_out_a_step_within_one_round_and_cpu_later_or_never():
    """From 0.4 pods' worth to five: the backlog signal has five pods ready within
    a scrape, a sync, the up window and the slowest start-up; CPU against the 250m
    request gets there later, and against a 1-core request never."""
    step_at, load = 60.0, 5.0
    curve = step_curve(0.4, load, step_at, 240.0)
    needed = math.ceil(load)
    deadline = step_at + CLUSTER.scrape + CLUSTER.sync + CLUSTER.up_window + CLUSTER.slowest_startup
    backlog = run_of(BACKLOG, curve=curve)
    assert backlog.ready[0] == 1
    reached = first_second(backlog, needed)
    assert reached is not None and reached <= deadline, (reached, deadline)

    cpu = run_of(CPU, curve=curve)
    cpu_reached = first_second(cpu, needed)
    assert cpu_reached is None or cpu_reached > reached, (cpu_reached, reached)
    assert cpu.wait_quantile(0.99) > backlog.wait_quantile(0.99)
    assert cpu.waited > backlog.waited

    # A pod at full speed uses 0.35 cores: 35% of a 1-core request, under the 70%
    # target, however many requests wait. The CPU signal never scales.
    never = run_of(CPU, cluster=replace(CLUSTER, cpu_request=1.0), curve=curve)
    assert max(never.pods) == 1
    assert first_second(never, needed) is None
    assert never.queued[-1] > 100_000  # and the backlog only grows


@pytest.mark.parametrize(
    ("average", "pods", "expected"),
    [
        (1.09, 4, 4),  # within the tolerance above the target: no change
        (0.91, 4, 4),  # within the tolerance below it
        (1.0, 7, 7),
        (1.11, 4, 5),  # ceil(4 x 1.11)
        (0.89, 10, 9),  # ceil(10 x 0.89)
        (3.0, 2, 6),
    ],
)
def test_the_hpa_formula_and_its_tolerance(average, pods, expected):
    target = 44.8
    assert sim.replica_count(pods, [average * target] * pods, target, 0.1) == expected


def test_pods_not_ready_count_as_idle_on_a_scale_up():
    """Two pods at twice the target and two still starting: (2 x 2 + 2 x 0) / 4 is the
    target, so no more pods until the new ones report."""
    assert sim.replica_count(4, [2.0, 2.0], 1.0, 0.1, unready=2) == 4
    assert sim.replica_count(2, [2.0, 2.0], 1.0, 0.1) == 4


def test_a_metric_within_the_tolerance_never_changes_the_pods():
    """A steady load that keeps every pod near the target: the count stays put."""
    # 2.6 pods' worth on 4 pods: 0.65 x 64 in flight per pod, 0.93 of the target.
    curve = step_curve(2.6, 2.6, 0.0, 300.0)
    run = run_of(BACKLOG, curve=curve)
    assert set(run.pods) == {4}


def test_the_autoscaler_waits_out_the_scale_down_window():
    """The load falls at 60 s: no pod leaves before 60 + 300 s (the window keeps the
    highest proposal of its last 300 s), and the surplus is gone a round later."""
    fall = 60.0
    curve = step_curve(4.0, 0.5, fall, 480.0)
    run = run_of(BACKLOG, curve=curve)
    before = run.ready[int(fall)]
    assert before >= 6  # 4 pods' worth at 0.7 per pod
    window_end = int(fall + CLUSTER.down_window)
    assert min(run.ready[int(fall) : window_end]) >= before
    late = window_end + int(CLUSTER.sync + CLUSTER.scrape)
    assert run.ready[late] < before
    assert run.ready[-1] == CLUSTER.min_replicas


def test_the_scale_up_rate_limit_is_four_pods_or_double_per_period():
    autoscaler = sim.Autoscaler(CLUSTER)
    assert autoscaler.decide(15.0, 1, 20) == 5  # +4
    assert autoscaler.decide(30.0, 5, 20) == 10  # x2
    assert autoscaler.decide(45.0, 10, 40) == 20  # x2, and maxReplicas
    without = sim.Autoscaler(replace(CLUSTER, rate_limits=False))
    assert without.decide(15.0, 1, 20) == 20


def test_a_run_is_reproducible():
    curve = step_curve(0.5, 3.0, 30.0, 120.0)
    first, second = run_of(BACKLOG, curve=curve, seed=7), run_of(BACKLOG, curve=curve, seed=7)
    assert first.queued == second.queued and first.pods == second.pods


def test_the_inputs_come_from_the_results_and_manifests():
    inputs = sim.read_inputs(ROOT / "bench" / "results" / "async.md", pull=10.0, scrape=15.0)
    io = inputs.profiles["io"]
    assert io.concurrency == sim.max_workers_default().value
    assert 500 < io.capacity < 1_280  # 64 threads / 50 ms is the ceiling
    assert 0 < io.cpu_per_request < io.service
    assert inputs.cluster.min_replicas >= 1 and inputs.cluster.max_replicas > 8
    assert all(figure.source for figure in inputs.figures)


def test_a_cpu_bound_pods_gauge_is_not_in_proportion_to_its_load():
    """One core shared by the threads: u / (1 - u) requests in flight. At 80% busy the
    gauge reads 4; at 67% it reads 2, and the HPA's proportional rule halves the pods,
    which then run at 133%. A pod of 64 threads at 70% barely queues."""
    assert sim.waiting_within_a_step(1, 0.8) + 0.8 == pytest.approx(4.0)
    assert sim.waiting_within_a_step(1, 2 / 3) + 2 / 3 == pytest.approx(2.0)
    assert sim.replica_count(12, [2.0] * 12, 4.0) == 6
    assert sim.waiting_within_a_step(64, 0.7) < 0.1
