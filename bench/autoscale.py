"""Kubernetes autoscaling of Hurricane's web pods, simulated: CPU against the backlog.

    python bench/autoscale.py                          every curve, every signal
    python bench/autoscale.py --curves spike --seconds 1800
    python bench/autoscale.py --pull 60 --scrape 30    slower image pulls and scrapes

There is no cluster here, so the script models one. Load curves (a ramp, a spike, a
day) are offered to a Deployment of web pods whose replica count a
HorizontalPodAutoscaler sets, once with the CPU signal the manifests ship (average
CPU utilization against the pod's CPU request) and once with Hurricane's backlog
(`hurricane_http_requests_in_flight` + `hurricane_http_request_backlog` per pod),
and the two are compared on the same curves: requests that waited for a worker,
p99 wait, pod-minutes, and how long the pods took to reach the peak's capacity.

Every pod is a queue: Poisson arrivals, split at random over the ready pods as a
Service does, served by `concurrency` worker threads that each hold a request for
`service` seconds, with a FIFO backlog in front of them. Per-pod capacity, CPU per
request and start-up come from the project's own measurements (bench/results) and
manifests (k8s-manifests); the table at the top of the output says where each
figure comes from. The autoscaler follows Kubernetes' documented algorithm: the
replica count ceil(current x metric / target) over the pods that report a metric,
the 0.1 tolerance, pods not yet ready counted as 0 on a scale-up, the scale-up and
scale-down stabilization windows, the default rate limits (up: 4 pods or 100% per
15 s, whichever is more; down: 100% per 15 s), a 15 s sync period and metrics
scraped every 15 s. Output: bench/results/autoscale.md and bench/results/autoscale.png.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MANIFESTS = ROOT / "k8s-manifests"

# What Kubernetes does unless told otherwise (kube-controller-manager's flags and the
# autoscaling/v2 defaults of `behavior`), so typed here rather than read from a file.
HPA_SYNC_SECONDS = 15.0  # --horizontal-pod-autoscaler-sync-period
HPA_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
SCALE_UP_WINDOW_SECONDS = 0.0  # behavior.scaleUp.stabilizationWindowSeconds
SCALE_UP_PODS = 4  # behavior.scaleUp.policies: Pods 4 per 15 s ...
SCALE_UP_PERCENT = 100.0  # ... or Percent 100 per 15 s, whichever allows more
SCALE_DOWN_PERCENT = 100.0  # behavior.scaleDown.policies: Percent 100 per 15 s
POLICY_PERIOD_SECONDS = 15.0
# A common scrape interval for Prometheus (its own default is 60 s) and metrics-server's
# resolution; typed, as it is the cluster's choice.
SCRAPE_SECONDS = 15.0
# From the HPA's decision to a pod that runs the image: the ReplicaSet, the scheduler,
# the image pull (imagePullPolicy: Always asks the registry every time; the layers are
# on a node that ran the image before) and the container's creation. A node that has
# to pull every layer takes tens of seconds more, a node the cluster autoscaler has to
# add, minutes (--pull).
SCHEDULE_AND_PULL_SECONDS = 10.0
# The ramp again with slow pods and scrapes: a node that pulls the whole image, and a
# Prometheus that scrapes every 30 s.
SLOW_PULL = 60.0
SLOW_SCRAPE = 30.0

# The load, in pods' worth: multiples of what one pod serves at most.
BASE_LOAD = 1.0
PEAK_LOAD = 8.0
TARGET_SHARES = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_SHARE = 0.7


# -- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One input of the model, with where it came from."""

    what: str
    value: float
    unit: str
    source: str


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def markdown_rows(text: str) -> list[list[str]]:
    """The rows of the first pipe table in ``text``, separator rows left out."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
            continue
        rows.append(cells)
    return rows


def table_cell(text: str, after: str, row: str, column: str) -> str:
    """The cell of ``row`` (its first cell) and ``column`` (a header) in the first
    table that follows the line starting with ``after``."""
    start = text.find(after)
    if start < 0:
        raise ValueError(f"no {after!r}")
    rows = markdown_rows(text[start:])
    header = rows[0]
    for cells in rows[1:]:
        if cells[0] == row:
            return cells[header.index(column)]
    raise ValueError(f"no row {row!r} under {after!r}")


def number(text: str) -> float:
    return float(text.replace(",", ""))


def http_figures(results: Path, server: str = "hurricane") -> dict[str, Figure]:
    """Requests per second and per CPU-second of /sleep and /plain, the wrk
    connections and the start to the first 200, as bench/servers.py wrote them."""
    text = results.read_text()
    name = rel(results)
    connections = re.search(r"wrk -t\d+ -c(\d+)", text)
    if connections is None:
        raise ValueError(f"{name}: no wrk command line")
    figures = {
        "connections": Figure(
            "wrk connections",
            float(connections.group(1)),
            "",
            f"{name}, first line (wrk -c)",
        )
    }
    heading = "Requests per second (requests per CPU-second"
    for path in ("/sleep", "/plain"):
        cell = table_cell(text, heading, path, server)
        match = re.fullmatch(r"([\d,]+) \(([\d,]+)\)", cell)
        if match is None:
            raise ValueError(f"{name}: {path} {server}: {cell!r}")
        where = f"{name}, requests per second, row {path}, column {server}"
        figures[f"{path} rate"] = Figure(f"{path}: requests/s", number(match[1]), "", where)
        figures[f"{path} cpu"] = Figure(
            f"{path}: requests per CPU-second", number(match[2]), "", where + " (brackets)"
        )
    start = table_cell(text, "| server | start to first 200", server, "start to first 200")
    figures["start"] = Figure(
        "process start to first 200",
        float(start.split()[0]),
        "s",
        f"{name}, row {server}, column start to first 200",
    )
    return figures


def manifest_figures(manifests: Path = MANIFESTS) -> dict[str, Figure]:
    """What the shipped manifests set: the CPU request and limit, the probes' periods,
    the HPA's CPU target, scale-down window and replica bounds, the readiness limit
    on the backlog and the shutdown delay."""
    import yaml  # PyYAML: a test dependency of the project

    base = manifests / "base"
    deployment = yaml.safe_load((base / "web-deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    hpa = yaml.safe_load((base / "hpa.yaml").read_text())
    dep, hpa_name = rel(base / "web-deployment.yaml"), rel(base / "hpa.yaml")
    figures = {
        "cpu request": Figure(
            "CPU request",
            cpu_cores(container["resources"]["requests"]["cpu"]),
            "CPU",
            f"{dep}, resources.requests.cpu",
        ),
        "cpu limit": Figure(
            "CPU limit",
            cpu_cores(container["resources"]["limits"]["cpu"]),
            "CPU",
            f"{dep}, resources.limits.cpu",
        ),
        "startup period": Figure(
            "startup probe period",
            float(container["startupProbe"]["periodSeconds"]),
            "s",
            f"{dep}, startupProbe.periodSeconds",
        ),
        "readiness period": Figure(
            "readiness probe period",
            float(container["readinessProbe"]["periodSeconds"]),
            "s",
            f"{dep}, readinessProbe.periodSeconds",
        ),
    }
    (metric,) = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
    figures["cpu target"] = Figure(
        "HPA CPU target",
        metric["resource"]["target"]["averageUtilization"] / 100,
        "of the request",
        f"{hpa_name}, averageUtilization",
    )
    figures["down window"] = Figure(
        "scale-down stabilization window",
        float(hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]),
        "s",
        f"{hpa_name}, behavior.scaleDown",
    )
    # The production overlay's bounds (base: 2-10), which leave room for the peak.
    overlay = manifests / "overlays" / "production" / "kustomization.yaml"
    bounds = {"minReplicas": hpa["spec"]["minReplicas"], "maxReplicas": hpa["spec"]["maxReplicas"]}
    source = hpa_name
    for patch in yaml.safe_load(overlay.read_text()).get("patches", []):
        if patch.get("target", {}).get("kind") != "HorizontalPodAutoscaler":
            continue
        for op in yaml.safe_load(patch["patch"]):
            key = op["path"].rsplit("/", 1)[-1]
            if key in bounds:
                bounds[key] = op["value"]
                source = rel(overlay)
    figures["min replicas"] = Figure("minReplicas", float(bounds["minReplicas"]), "", source)
    figures["max replicas"] = Figure("maxReplicas", float(bounds["maxReplicas"]), "", source)
    env = dict(
        line.split("=", 1)
        for line in (base / "web.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    component = manifests / "components" / "autoscaling-prometheus-adapter" / "kustomization.yaml"
    if component.exists():
        for patch in yaml.safe_load(component.read_text()).get("patches", []):
            for op in yaml.safe_load(patch["patch"]):
                for metric in op.get("value") or []:
                    target = metric.get("pods", {}).get("target", {})
                    if "averageValue" in target:
                        figures["in-flight target"] = Figure(
                            "in-flight target of the autoscaling components",
                            float(target["averageValue"]),
                            "requests per pod",
                            f"{rel(component)}, averageValue",
                        )
    figures["queue limit"] = Figure(
        "readiness fails at a backlog of",
        float(env["HURRICANE_REQ_QUEUE_LEN"]),
        "requests",
        f"{rel(base / 'web.env')}, HURRICANE_REQ_QUEUE_LEN",
    )
    figures["shutdown delay"] = Figure(
        "shutdown delay",
        float(env["HURRICANE_SHUTDOWN_DELAY"]),
        "s",
        f"{rel(base / 'web.env')}, HURRICANE_SHUTDOWN_DELAY",
    )
    return figures


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def max_workers_default(options: Path = ROOT / "hurricane" / "config" / "options.py") -> Figure:
    """The default of --max-workers, from the option table's source."""
    match = re.search(r'"max_workers",\s*positive_int,\s*(\d+)', options.read_text())
    if match is None:
        raise ValueError(f"{rel(options)}: no max_workers default")
    return Figure("worker threads per pod", float(match[1]), "", f"{rel(options)}, max_workers")


@dataclass(frozen=True)
class Profile:
    """What one pod does with one kind of request."""

    key: str
    name: str
    concurrency: float  # requests served at once (worker threads, or cores)
    unit: str  # what the concurrency counts
    service: float  # seconds a request holds one of them
    cpu_per_request: float  # CPU-seconds

    @property
    def capacity(self) -> float:
        return self.concurrency / self.service


@dataclass(frozen=True)
class Cluster:
    """The Deployment, its HorizontalPodAutoscaler and the cluster's timings."""

    min_replicas: int = 3
    max_replicas: int = 20
    sync: float = HPA_SYNC_SECONDS
    tolerance: float = HPA_TOLERANCE
    up_window: float = SCALE_UP_WINDOW_SECONDS
    down_window: float = 300.0
    up_pods: int = SCALE_UP_PODS
    up_percent: float = SCALE_UP_PERCENT
    down_percent: float = SCALE_DOWN_PERCENT
    policy_period: float = POLICY_PERIOD_SECONDS
    rate_limits: bool = True
    scrape: float = SCRAPE_SECONDS
    # Scrapes run on their own clock: half an interval before each sync.
    scrape_phase: float = SCRAPE_SECONDS / 2
    cpu_request: float = 0.25
    pull: float = SCHEDULE_AND_PULL_SECONDS
    process_start: float = 0.25
    startup_period: float = 5.0
    readiness_period: float = 5.0
    shutdown_delay: float = 10.0
    queue_limit: float = 20.0

    def startup(self, rng: random.Random) -> float:
        """From the HPA's decision to ready: scheduling and pull, the process's start,
        then the first startup probe that finds it serving and the first readiness
        probe after that, each at a random point of its period."""
        return (
            self.pull
            + self.process_start
            + rng.uniform(0, self.startup_period)
            + rng.uniform(0, self.readiness_period)
        )

    @property
    def slowest_startup(self) -> float:
        return self.pull + self.process_start + self.startup_period + self.readiness_period


@dataclass(frozen=True)
class Inputs:
    figures: list[Figure]
    profiles: dict[str, Profile]
    cluster: Cluster
    cpu_target: float
    # The in-flight target k8s-manifests/components ship, if they do.
    in_flight_target: float | None = None


def read_inputs(results: Path, pull: float, scrape: float) -> Inputs:
    http = http_figures(results)
    k8s = manifest_figures()
    threads = max_workers_default()
    connections = http["connections"].value
    # With the 50 ms view, each of wrk's connections holds a worker thread for a whole
    # request, so the time a request holds it is connections / rate (Little's law).
    sleep_service = connections / http["/sleep rate"].value
    concurrency = min(threads.value, connections)
    io = Profile(
        "io",
        "/sleep (blocking 50 ms, I/O-bound)",
        concurrency=concurrency,
        unit="threads",
        service=sleep_service,
        cpu_per_request=1 / http["/sleep cpu"].value,
    )
    # A CPU-bound view runs on one core at a time (the GIL), at most the CPU limit.
    cores = min(1.0, k8s["cpu limit"].value)
    plain_cpu = 1 / http["/plain cpu"].value
    cpu = Profile(
        "cpu",
        "/plain (CPU-bound)",
        concurrency=cores,
        unit="cores",
        service=plain_cpu / cores,
        cpu_per_request=plain_cpu,
    )
    cluster = Cluster(
        min_replicas=int(k8s["min replicas"].value),
        max_replicas=int(k8s["max replicas"].value),
        down_window=k8s["down window"].value,
        scrape=scrape,
        scrape_phase=scrape / 2,
        cpu_request=k8s["cpu request"].value,
        pull=pull,
        process_start=http["start"].value,
        startup_period=k8s["startup period"].value,
        readiness_period=k8s["readiness period"].value,
        shutdown_delay=k8s["shutdown delay"].value,
        queue_limit=k8s["queue limit"].value,
    )
    typed = "typed: Kubernetes' default"
    figures = [
        http["/sleep rate"],
        http["/sleep cpu"],
        http["connections"],
        threads,
        Figure(
            "/sleep: time a request holds a thread",
            sleep_service * 1000,
            "ms",
            "connections / requests per second",
        ),
        Figure(
            "/sleep: CPU per request",
            io.cpu_per_request * 1000,
            "ms",
            "1 / requests per CPU-second",
        ),
        Figure("/sleep: one pod's capacity", io.capacity, "requests/s", "threads / time held"),
        http["/plain rate"],
        http["/plain cpu"],
        Figure(
            "/plain: CPU per request",
            cpu.cpu_per_request * 1000,
            "ms",
            "1 / requests per CPU-second",
        ),
        Figure(
            "/plain: one pod's capacity",
            cpu.capacity,
            "requests/s",
            "one core (the CPU limit, one process) / CPU per request",
        ),
        http["start"],
        Figure("scheduling and image pull", pull, "s", "typed allowance (--pull)"),
        k8s["startup period"],
        k8s["readiness period"],
        Figure(
            "pod start-up, HPA decision to ready",
            cluster.pull
            + cluster.process_start
            + (cluster.startup_period + cluster.readiness_period) / 2,
            "s",
            f"mean; {cluster.pull + cluster.process_start:.2f} s up to "
            f"{cluster.slowest_startup:.2f} s: pull + start + a random wait for each probe",
        ),
        k8s["cpu request"],
        k8s["cpu limit"],
        k8s["cpu target"],
        k8s["min replicas"],
        k8s["max replicas"],
        Figure("HPA sync period", cluster.sync, "s", typed),
        Figure("HPA tolerance", cluster.tolerance, "", typed),
        Figure("scale-up stabilization window", cluster.up_window, "s", typed),
        k8s["down window"],
        Figure(
            "scale-up rate limit",
            cluster.up_pods,
            "pods",
            f"{typed}: +{cluster.up_pods} pods or +{cluster.up_percent:.0f}% per "
            f"{cluster.policy_period:.0f} s, whichever is more",
        ),
        Figure(
            "scale-down rate limit",
            cluster.down_percent,
            "%",
            f"{typed}: {cluster.down_percent:.0f}% per {cluster.policy_period:.0f} s",
        ),
        Figure(
            "metrics scraped every",
            scrape,
            "s",
            f"typed (--scrape); each sync reads a sample {cluster.scrape_phase:g} s old "
            "(CPU: the average over the interval before it)",
        ),
        k8s["queue limit"],
        k8s["shutdown delay"],
    ]
    component = k8s.get("in-flight target")
    if component is not None:
        figures.insert(figures.index(k8s["cpu target"]) + 1, component)
    return Inputs(
        figures,
        {"io": io, "cpu": cpu},
        cluster,
        k8s["cpu target"].value,
        component.value if component else None,
    )


# -- the load -------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """Offered load over time, in pods' worth (multiples of one pod's capacity)."""

    name: str
    seconds: float
    shape: Callable[[float], float]
    description: str

    def grid(self, step: float = 1.0) -> list[float]:
        return [self.shape(i * step) for i in range(int(self.seconds / step) + 1)]

    def peak(self) -> tuple[float, float]:
        """The peak load and the first second it is reached."""
        loads = self.grid()
        top = max(loads)
        return top, float(loads.index(top))


def ramp(seconds: float = 1800.0) -> Curve:
    up, top, down, end = seconds / 6, seconds / 3, 2 * seconds / 3, 5 * seconds / 6

    def shape(t: float) -> float:
        if t < up or t >= end:
            return BASE_LOAD
        if t < top:
            return BASE_LOAD + (PEAK_LOAD - BASE_LOAD) * (t - up) / (top - up)
        if t < down:
            return PEAK_LOAD
        return PEAK_LOAD - (PEAK_LOAD - BASE_LOAD) * (t - down) / (end - down)

    return Curve(
        "ramp",
        seconds,
        shape,
        f"{BASE_LOAD:g} pod's worth, up to {PEAK_LOAD:g} from {up / 60:g} to {top / 60:g} min, "
        f"held until {down / 60:g} min, back to {BASE_LOAD:g} by {end / 60:g} min",
    )


def spike(seconds: float = 1800.0) -> Curve:
    base = 1.5
    start = min(300.0, seconds / 6)
    length = min(300.0, seconds / 6)

    def shape(t: float) -> float:
        return PEAK_LOAD if start <= t < start + length else base

    return Curve(
        "spike",
        seconds,
        shape,
        f"{base:g} pods' worth, {PEAK_LOAD:g} from {start / 60:g} to "
        f"{(start + length) / 60:g} min (a step up and a step down)",
    )


def diurnal(seconds: float = 86400.0) -> Curve:
    """A working day's shape: quiet at night, a rise through the morning, the peak in
    the early afternoon, a second hump in the evening, compressed or stretched into
    ``seconds``."""
    trough = 0.6

    def bumps(hour: float) -> float:
        return 1.0 * math.exp(-(((hour - 13.5) / 3.5) ** 2)) + 0.55 * math.exp(
            -(((hour - 20.5) / 2.0) ** 2)
        )

    top = max(bumps(h / 100) for h in range(2400))

    def shape(t: float) -> float:
        return trough + (PEAK_LOAD - trough) * bumps(24 * t / seconds) / top

    hours = seconds / 3600
    return Curve(
        "diurnal",
        seconds,
        shape,
        f"a day in {hours:g} h: {trough:g} pods' worth at night, {PEAK_LOAD:g} in the "
        "early afternoon, a smaller hump in the evening",
    )


CURVES: dict[str, Callable[..., Curve]] = {"ramp": ramp, "spike": spike, "diurnal": diurnal}


# -- the autoscaler -------------------------------------------------------------------


def replica_count(
    current: int,
    values: list[float],
    target: float,
    tolerance: float = HPA_TOLERANCE,
    missing: int = 0,
    unready: int = 0,
) -> int:
    """The replica count the HPA proposes for one metric, as Kubernetes documents it:
    ceil(pods x average / target) over the pods that report the metric, no change
    while average / target is within ``tolerance`` of 1, and, when some pods have
    no sample yet (``missing``) or are not ready (``unready``), the ratio worked out
    again with those at 0 for a scale-up (and the missing at the target for a
    scale-down); if that turns the direction round or lands within the tolerance,
    no change."""
    if not values:
        return current
    ratio = sum(values) / (len(values) * target)
    up_with_unready = unready > 0 and ratio > 1.0
    if not up_with_unready and missing == 0:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * len(values))
    total, count = sum(values), len(values)
    if missing:
        if ratio < 1.0:
            total += missing * target
        count += missing
    if up_with_unready:
        count += unready
    new_ratio = total / (count * target)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    replicas = math.ceil(new_ratio * count)
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas


class Autoscaler:
    """The HPA's decision at each sync: the proposal, then the stabilization windows
    (a scale-up to the lowest proposal of the up window, a scale-down to the highest
    of the down window), then the rate limits and the replica bounds."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.proposals: list[tuple[float, int]] = []
        self.changes: list[tuple[float, int]] = []

    def decide(self, now: float, current: int, proposal: int) -> int:
        c = self.cluster
        up = down = proposal
        for at, replicas in self.proposals:
            if at > now - c.up_window:
                up = min(up, replicas)
            if at > now - c.down_window:
                down = max(down, replicas)
        horizon = now - max(c.up_window, c.down_window)
        self.proposals = [(at, r) for at, r in self.proposals if at > horizon]
        self.proposals.append((now, proposal))
        wanted = current
        if wanted < up:
            wanted = up
        if wanted > down:
            wanted = down
        highest, lowest = c.max_replicas, c.min_replicas
        if c.rate_limits:
            recent = [d for at, d in self.changes if at > now - c.policy_period]
            start_up = current - sum(d for d in recent if d > 0)
            up_limit = max(start_up + c.up_pods, math.ceil(start_up * (1 + c.up_percent / 100)))
            start_down = current - sum(d for d in recent if d < 0)
            down_limit = int(start_down * (1 - c.down_percent / 100))
            highest = min(highest, max(up_limit, current))
            lowest = max(lowest, min(down_limit, current))
        wanted = max(lowest, min(highest, wanted))
        if wanted != current:
            self.changes = [(at, d) for at, d in self.changes if at > now - c.policy_period]
            self.changes.append((now, wanted - current))
        return wanted


METRICS = ("cpu", "backlog", "in-flight")


@dataclass(frozen=True)
class Signal:
    """What the HPA scales on: ``cpu`` (utilization of the CPU request), ``backlog``
    (in-flight + backlog per pod, the sum of Hurricane's two gauges) or ``in-flight``
    (the in-flight gauge alone, which already counts the requests that wait)."""

    metric: str
    target: float  # cpu: a share of the request; else requests per pod
    share: float = 0.0  # the target as a share of the pod's concurrency

    def label(self, unit: str = "threads") -> str:
        if self.metric == "cpu":
            return f"CPU {self.target:.0%}"
        name = "in-flight + backlog" if self.metric == "backlog" else "in-flight"
        return f"{name} {self.target:.3g} ({self.share:g} x {unit})"


@dataclass(frozen=True)
class Scenario:
    """One HPA on one profile. With more than one signal the HPA takes the largest of
    their proposals, as Kubernetes does with several metrics."""

    label: str
    signals: tuple[Signal, ...]
    cluster: Cluster
    profile: Profile

    @property
    def signal(self) -> Signal:
        return self.signals[0]


# -- the simulation -------------------------------------------------------------------


class Pod:
    __slots__ = ("ready_at", "queue", "busy", "cpu", "samples", "full_window", "leaving_at")

    def __init__(self, ready_at: float) -> None:
        self.ready_at = ready_at
        self.queue = 0.0  # requests waiting for a worker thread
        self.busy = 0.0  # worker threads holding a request, over the last step
        self.cpu = 0.0  # CPU-seconds since the last scrape
        # The metrics as last scraped, in the order of METRICS; None: no sample yet.
        self.samples: list[float | None] = [None, None, None]
        self.full_window = False  # ready for the whole scrape interval
        self.leaving_at = 0.0


def waiting_within_a_step(concurrency: int, utilization: float) -> float:
    """The mean number of requests waiting in an M/M/c queue with ``concurrency``
    servers at ``utilization`` (capped at 0.99): what a pod's gauge counts beyond its
    busy threads when no wait lasts a whole step. Small for 64 threads below 90%; for
    one core it makes the whole count u / (1 - u), the requests a CPU-bound pod's
    threads share its core between."""
    u = min(max(utilization, 0.0), 0.99)
    if u == 0.0:
        return 0.0
    offered = concurrency * u
    blocking = 1.0  # Erlang B, built up one server at a time
    for servers in range(1, concurrency + 1):
        blocking = offered * blocking / (servers + offered * blocking)
    waits = blocking / (1 - u * (1 - blocking))  # Erlang C: the chance to wait
    return waits * u / (1 - u)


# Poisson draws with a larger mean take the normal approximation.
NORMAL_ABOVE = 10.0


def poisson(rng: random.Random, mean: float) -> float:
    """A Poisson draw: exact below a mean of NORMAL_ABOVE, the normal approximation
    from there."""
    if mean <= 0.0:
        return 0.0
    if mean < NORMAL_ABOVE:
        limit, count, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return float(count)
    return max(0.0, round(rng.gauss(mean, math.sqrt(mean))))


# Waits go into buckets 5% wide from 1 ms (bucket 0: up to 1 ms; no wait: none).
WAIT_BUCKET = math.log(1.05)


@dataclass
class Run:
    scenario: Scenario
    curve: Curve
    step: float
    offered: list[float] = field(default_factory=list)  # requests/s, each second
    pods: list[int] = field(default_factory=list)  # pods that exist, each second
    ready: list[int] = field(default_factory=list)  # pods in the Service, each second
    queued: list[float] = field(default_factory=list)  # waiting requests, each second
    peak_queued: float = 0.0
    requests: float = 0.0
    waited: float = 0.0
    waits: dict[int, float] = field(default_factory=dict)
    pod_seconds: float = 0.0
    over_limit_seconds: float = 0.0  # pod-seconds with a backlog at the readiness limit

    def wait_quantile(self, q: float) -> float:
        """Seconds a request waited for a worker, at quantile ``q`` of all requests."""
        rank = q * self.requests
        seen = self.requests - self.waited
        if rank <= seen:
            return 0.0
        for bucket in sorted(self.waits):
            seen += self.waits[bucket]
            if seen >= rank:
                return 0.001 * math.exp((bucket + 0.5) * WAIT_BUCKET)
        return self.longest_wait()

    def longest_wait(self) -> float:
        return 0.001 * math.exp((max(self.waits) + 1) * WAIT_BUCKET) if self.waits else 0.0

    @property
    def pod_minutes(self) -> float:
        return self.pod_seconds / 60

    def time_to_peak_capacity(self) -> float | None:
        """Seconds from the first moment the load is at its peak until the ready pods
        can serve the peak (negative: they could before the peak came), counted from
        the last time before the peak that they could not; None if they never did."""
        peak, at = self.curve.peak()
        needed = math.ceil(peak - 1e-9)
        short = [s for s, ready in enumerate(self.ready) if ready < needed and s <= at]
        first_short = short[-1] + 1 if short else 0
        for second in range(first_short, len(self.ready)):
            if self.ready[second] >= needed:
                return second - at
        return None


class Result:
    """A scenario on a curve over one or more seeds: the median of each figure (a time
    that most seeds never reached is None), and the first seed's time series."""

    def __init__(self, runs: list[Run]) -> None:
        first = runs[0]
        self.runs = runs
        self.scenario, self.curve, self.step = first.scenario, first.curve, first.step
        self.offered, self.pods, self.ready = first.offered, first.pods, first.ready
        self.queued = first.queued

    def median(self, value: Callable[[Run], float | None]) -> float | None:
        values = [value(run) for run in self.runs]
        if sum(v is None for v in values) * 2 > len(values):
            return None
        return statistics.median(math.inf if v is None else v for v in values)

    def _median(self, value: Callable[[Run], float]) -> float:
        return statistics.median(value(run) for run in self.runs)

    @property
    def peak_queued(self) -> float:
        return self._median(lambda r: r.peak_queued)

    @property
    def requests(self) -> float:
        return self._median(lambda r: r.requests)

    @property
    def waited(self) -> float:
        return self._median(lambda r: r.waited)

    @property
    def pod_minutes(self) -> float:
        return self._median(lambda r: r.pod_minutes)

    @property
    def over_limit_seconds(self) -> float:
        return self._median(lambda r: r.over_limit_seconds)

    def wait_quantile(self, q: float) -> float:
        return self._median(lambda r: r.wait_quantile(q))

    def longest_wait(self) -> float:
        return self._median(lambda r: r.longest_wait())

    def time_to_peak_capacity(self) -> float | None:
        value = self.median(lambda r: r.time_to_peak_capacity())
        return None if value is None or math.isinf(value) else value


def initial_replicas(scenario: Scenario, load: float) -> int:
    """The pods an HPA holds at a steady ``load`` (pods' worth): the fewest at which
    each pod's metric is within the tolerance above the target, where an HPA coming
    up from a lower load stops (with several signals, the most pods)."""
    profile, cluster = scenario.profile, scenario.cluster
    rate = load * profile.capacity
    pods = cluster.min_replicas
    threads = max(1, round(profile.concurrency))
    for signal in scenario.signals:
        if signal.metric == "cpu":
            per_pod = signal.target * cluster.cpu_request / profile.cpu_per_request
        else:
            # The utilization at which the gauge reads the target.
            twice = 2 if signal.metric == "backlog" else 1
            low, high = 0.0, 0.99
            for _ in range(40):
                u = (low + high) / 2
                gauge = u * profile.concurrency + twice * waiting_within_a_step(threads, u)
                low, high = (u, high) if gauge < signal.target else (low, u)
            per_pod = low * profile.capacity
        per_pod = min(per_pod * (1 + cluster.tolerance), profile.capacity)
        pods = max(pods, math.ceil(rate / per_pod))
    return min(cluster.max_replicas, pods)


def simulate(scenario: Scenario, curve: Curve, step: float = 0.1, seed: int = 1) -> Run:
    """Offer ``curve`` to the pods of ``scenario`` for ``curve.seconds``, in steps of
    ``step`` seconds (1 / step whole), and record what a user would see."""
    per_second = round(1 / step)
    if abs(per_second * step - 1) > 1e-9:
        raise ValueError("the step must divide a second")
    rng = random.Random(seed)  # arrivals
    gauss = rng.gauss
    # Start-ups from a stream of their own: the n-th pod a run adds starts as slowly
    # as the n-th pod of every other run.
    startups = random.Random(f"{seed}-startups")
    profile, cluster = scenario.profile, scenario.cluster
    threads = max(1, round(profile.concurrency))
    chosen = [(signal, METRICS.index(signal.metric)) for signal in scenario.signals]
    capacity = profile.capacity
    per_step = capacity * step  # requests one pod can start in a step
    hold = profile.service / step  # busy threads per request started in a step
    cpu_cost = profile.cpu_per_request
    queue_limit = cluster.queue_limit
    sync_every = round(cluster.sync / step)
    scrape_every = round(cluster.scrape / step)
    scrape_at = round(cluster.scrape_phase / step) % scrape_every
    run = Run(scenario, curve, step)
    waits = run.waits

    # A steady state to start from: the pods the signal holds at the first load, which
    # the HPA has proposed for as long as its windows remember.
    initial = initial_replicas(scenario, curve.shape(0.0))
    serving = [Pod(0.0) for _ in range(initial)]
    for pod in serving:
        pod.full_window = True
    autoscaler = Autoscaler(cluster)
    autoscaler.proposals.append((0.0, initial))
    last_scrape = 0.0
    pending: list[Pod] = []  # created, not yet ready
    leaving: list[Pod] = []  # deleted, finishing their backlog and shutdown delay

    steps = round(curve.seconds / step)
    for i in range(steps):
        now = i * step
        if pending:
            for pod in [p for p in pending if p.ready_at <= now]:
                pending.remove(pod)
                serving.append(pod)
        if i % scrape_every == scrape_at:
            window, last_scrape = now - last_scrape, now
            for pod in serving:
                # CPU: the usage over the interval, once the pod was ready for all of it.
                usage = pod.cpu / window / cluster.cpu_request if window else 0.0
                pod.samples[0] = usage if pod.full_window else None
                # The gauges as they stand: in-flight counts the waiting requests too,
                # and those that wait less than a step, which the steps do not show.
                waiting = pod.queue
                if not waiting:
                    waiting = waiting_within_a_step(threads, pod.busy / profile.concurrency)
                pod.samples[1] = pod.busy + 2 * waiting
                pod.samples[2] = pod.busy + waiting
                pod.cpu = 0.0
                pod.full_window = True
        if i and i % sync_every == 0:
            current = len(pending) + len(serving)
            proposal = 0
            for signal, index in chosen:
                values = [v for p in serving if (v := p.samples[index]) is not None]
                proposal = max(
                    proposal,
                    replica_count(
                        current,
                        values,
                        signal.target,
                        cluster.tolerance,
                        missing=len(serving) - len(values),
                        unready=len(pending),
                    ),
                )
            wanted = autoscaler.decide(now, current, proposal)
            for _ in range(wanted - current):
                pending.append(Pod(now + cluster.startup(startups)))
            for _ in range(current - wanted):
                # The ReplicaSet deletes pods not yet ready first, then the newest.
                if pending:
                    pending.remove(max(pending, key=lambda p: p.ready_at))
                    continue
                pod = serving.pop()
                pod.leaving_at = now
                leaving.append(pod)

        rate = curve.shape(now + step / 2) * capacity
        # The Service spreads requests at random: each ready pod gets a Poisson share.
        mean = rate * step / len(serving)
        spread = math.sqrt(mean) if mean >= NORMAL_ABOVE else 0.0
        queued = 0.0
        for pods, arriving in ((serving, True), (leaving, False)):
            for pod in pods:
                if not arriving:
                    arrivals = 0.0
                elif spread:  # poisson(), inlined: this loop is the script's run time
                    arrivals = max(0.0, round(gauss(mean, spread)))
                else:
                    arrivals = poisson(rng, mean)
                run.requests += arrivals
                before = pod.queue
                work = before + arrivals
                if work <= per_step:
                    served, after = work, 0.0
                else:
                    served, after = per_step, work - per_step
                    entered = arrivals if before >= per_step else min(arrivals, after)
                    if entered > 0:
                        # FIFO: they wait behind the backlog as it stood when they came.
                        wait = (before + after) / (2 * capacity)
                        bucket = int(math.log(wait / 0.001) / WAIT_BUCKET) if wait > 0.001 else 0
                        waits[bucket] = waits.get(bucket, 0.0) + entered
                        run.waited += entered
                pod.queue = after
                pod.busy = served * hold
                pod.cpu += served * cpu_cost
                queued += after
                if after >= queue_limit:
                    run.over_limit_seconds += step
        if leaving:
            leaving = [
                p for p in leaving if p.queue > 0 or now < p.leaving_at + cluster.shutdown_delay
            ]
        if queued > run.peak_queued:
            run.peak_queued = queued
        run.pod_seconds += (len(serving) + len(pending) + len(leaving)) * step
        if i % per_second == 0:
            run.offered.append(rate)
            run.pods.append(len(serving) + len(pending) + len(leaving))
            run.ready.append(len(serving))
            run.queued.append(queued)
    return run


# -- the runs -------------------------------------------------------------------------


def scenarios(inputs: Inputs, shares: Iterable[float]) -> list[Scenario]:
    """The signals compared on each curve, for the I/O-bound and the CPU-bound view."""
    io, cpu = inputs.profiles["io"], inputs.profiles["cpu"]
    cluster = inputs.cluster
    shipped = Signal("cpu", inputs.cpu_target)
    request = f"{cluster.cpu_request * 1000:.0f}m"
    found = [
        Scenario(f"{shipped.label()} of {request} (shipped)", (shipped,), cluster, io),
        Scenario(f"{shipped.label()} of 1 core", (shipped,), replace(cluster, cpu_request=1.0), io),
    ]
    for share in sorted(set(shares) | {DEFAULT_SHARE}):
        signal = Signal("backlog", share * io.concurrency, share)
        found.append(Scenario(signal.label(), (signal,), cluster, io))
    backlog = Signal("backlog", DEFAULT_SHARE * io.concurrency, DEFAULT_SHARE)
    alone = Signal("in-flight", DEFAULT_SHARE * io.concurrency, DEFAULT_SHARE)
    found += [
        Scenario(alone.label(), (alone,), cluster, io),
        Scenario(
            f"{backlog.label()}, no scale-up rate limit",
            (backlog,),
            replace(cluster, rate_limits=False),
            io,
        ),
        Scenario(f"{alone.label()} and {shipped.label()}", (alone, shipped), cluster, io),
    ]
    found.append(Scenario(f"{shipped.label()} of {request} (shipped)", (shipped,), cluster, cpu))
    if inputs.in_flight_target is not None:
        # The target the autoscaling components ship, on both views.
        target = inputs.in_flight_target
        for profile in (io, cpu):
            signal = Signal("in-flight", target, target / profile.concurrency)
            label = f"in-flight {target:g} per pod (the autoscaling components)"
            found.insert(
                len(found) - 1 if profile is io else len(found),
                Scenario(label, (signal,), cluster, profile),
            )
    else:
        plain = Signal("in-flight", DEFAULT_SHARE * cpu.concurrency, DEFAULT_SHARE)
        found.append(Scenario(plain.label(cpu.unit), (plain,), cluster, cpu))
    return found


def default_step(seconds: float) -> float:
    return 0.1 if seconds <= 7200 else 1.0


# -- the report -----------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    if value is None:
        return "never"
    if abs(value) >= 7200:
        return f"{value / 3600:.1f} h"
    if abs(value) >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.0f} s"


def wait_text(value: float) -> str:
    if value == 0:
        return "0"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def count_text(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:,.0f}"


def result_table(runs: list[Result]) -> list[str]:
    lines = [
        "| signal | queued, peak | requests that waited | p99 wait | longest wait "
        "| pod-minutes | time to the peak's capacity | pod-seconds at the /ready limit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        share = run.waited / run.requests if run.requests else 0.0
        lines.append(
            f"| {run.scenario.label} | {count_text(run.peak_queued)} "
            f"| {count_text(run.waited)} ({share:.1%}) | {wait_text(run.wait_quantile(0.99))} "
            f"| {wait_text(run.longest_wait())} | {run.pod_minutes:,.0f} "
            f"| {seconds_text(run.time_to_peak_capacity())} | {run.over_limit_seconds:,.0f} |"
        )
    return lines


def find(
    runs: list[Result], curve: str, profile: str, metrics: str, limits: bool = True, **match: float
) -> Result | None:
    """The run of ``curve`` whose signals are ``metrics`` (joined with "+"), with the
    rate limits on or off, and whose signal or cluster has the ``match`` values."""
    for run in runs:
        s = run.scenario
        names = "+".join(signal.metric for signal in s.signals)
        if (run.curve.name, s.profile.key, names) != (curve, profile, metrics):
            continue
        if s.cluster.rate_limits != limits:
            continue
        if all(
            abs(getattr(s.signal if k != "cpu_request" else s.cluster, k) - v) < 1e-9
            for k, v in match.items()
        ):
            return run
    return None


# A target keeps up when no request waits longer than this on a curve that is not a
# step: the ramp and the day.
KEEPS_UP = 0.5


def swept_shares(runs: list[Result]) -> list[float]:
    return sorted(
        {
            r.scenario.signal.share
            for r in runs
            if r.scenario.signal.metric == "backlog" and r.scenario.profile.key == "io"
        }
    )


def highest_share_that_keeps_up(runs: list[Result], curves: list[Curve]) -> float | None:
    """The highest backlog target (a share of the threads) at which no request waited
    longer than KEEPS_UP on the curves that are not steps; None if none did."""
    smooth = [c.name for c in curves if c.name != "spike"]
    best = None
    for share in swept_shares(runs):
        chosen = [find(runs, name, "io", "backlog", share=share) for name in smooth]
        if chosen and all(r is not None and r.longest_wait() <= KEEPS_UP for r in chosen):
            best = share
    return best


def sweep_table(runs: list[Result], curves: list[Curve], profile: Profile) -> list[str]:
    head = "| target per pod |" + "".join(
        f" {c.name}: waited, longest, pod-minutes |" for c in curves
    )
    lines = [head, "|---|" + "---:|" * len(curves)]
    for share in swept_shares(runs):
        cells = []
        for curve in curves:
            run = find(runs, curve.name, "io", "backlog", share=share)
            if run is None:
                cells.append(" |")
                continue
            cells.append(
                f" {count_text(run.waited)}, {wait_text(run.longest_wait())}, "
                f"{run.pod_minutes:,.0f} |"
            )
        label = f"{share * profile.concurrency:.3g} ({share:g} x {profile.unit})"
        lines.append(f"| {label} |" + "".join(cells))
    return lines


def slow_table(fast: list[Result], slow: list[Result], slow_cluster: Cluster) -> list[str]:
    lines = [
        "| signal | as above: waited, longest, pod-minutes "
        f"| pull {slow_cluster.pull:g} s, scrapes every {slow_cluster.scrape:g} s: "
        "waited, longest, pod-minutes |",
        "|---|---:|---:|",
    ]
    for before in fast:
        after = next((r for r in slow if r.scenario.label == before.scenario.label), None)
        if after is None:
            continue
        cells = [
            f"{count_text(r.waited)}, {wait_text(r.longest_wait())}, {r.pod_minutes:,.0f}"
            for r in (before, after)
        ]
        lines.append(f"| {before.scenario.label} | {cells[0]} | {cells[1]} |")
    return lines


def reading(
    runs: list[Result],
    slow: list[Result],
    inputs: Inputs,
    curves: list[Curve],
    slow_cluster: Cluster,
) -> list[str]:
    """What the tables say, with their figures, and the target the docs should ship."""
    io = inputs.profiles["io"]
    cluster = inputs.cluster
    request = cluster.cpu_request
    names = [c.name for c in curves]
    lines: list[str] = []
    saturated = io.capacity * io.cpu_per_request / request
    lines.append(
        f"- **CPU cannot see a queue.** A `/sleep` pod at its full {io.capacity:,.0f} "
        f"requests/s uses {io.capacity * io.cpu_per_request:.2f} cores, "
        f"{saturated:.0%} of its {request * 1000:.0f}m request. Past that, each further "
        "request waits for a thread and costs no CPU, so the utilization stays put however "
        "long the backlog grows. The CPU signal then asks for at most "
        f"{saturated / inputs.cpu_target:.1f}x the pods per round, and for none while the "
        "pods it added are starting (they count as idle). With a 1-core request the same "
        f"pod peaks at {io.capacity * io.cpu_per_request:.0%} of it, under the "
        f"{inputs.cpu_target:.0%} target: the CPU signal never scales an I/O-bound app, "
        "and its queue only grows (the 1-core rows)."
    )
    at_target = inputs.cpu_target * request / io.cpu_per_request
    day = "diurnal" if "diurnal" in names else names[-1]
    cpu_day = find(runs, day, "io", "cpu", cpu_request=request)
    backlog_day = find(runs, day, "io", "backlog", share=DEFAULT_SHARE)
    if cpu_day and backlog_day:
        lines.append(
            f"- **On a steady or slow load the target sets the cost.** The shipped CPU target "
            f"holds `/sleep` pods at {at_target:,.0f} requests/s, {at_target / io.capacity:.0%} "
            f"of what their threads serve; the backlog at {DEFAULT_SHARE:g} x threads holds them "
            f"at {DEFAULT_SHARE:.0%}. The {day} curve took {cpu_day.pod_minutes:,.0f} "
            f"pod-minutes on CPU and {backlog_day.pod_minutes:,.0f} on the backlog "
            f"({1 - backlog_day.pod_minutes / cpu_day.pod_minutes:.0%} fewer)."
        )
    if "spike" in names:
        cpu_spike = find(runs, "spike", "io", "cpu", cpu_request=request)
        backlog_spike = find(runs, "spike", "io", "backlog", share=DEFAULT_SHARE)
        unlimited = find(runs, "spike", "io", "backlog", limits=False, share=DEFAULT_SHARE)
        if cpu_spike and backlog_spike and unlimited:
            start = cluster.pull + cluster.process_start
            mean = start + (cluster.startup_period + cluster.readiness_period) / 2
            waits = ", ".join(
                f"{share:g}: {wait_text(r.wait_quantile(0.99))}"
                for share in swept_shares(runs)
                if (r := find(runs, "spike", "io", "backlog", share=share))
            )
            lines.append(
                "- **On a spike the signal decides how soon, the start-up how late.** After "
                f"the step the ready pods could serve the peak within "
                f"{seconds_text(backlog_spike.time_to_peak_capacity())} on the backlog and "
                f"{seconds_text(cpu_spike.time_to_peak_capacity())} on CPU (p99 wait "
                f"{wait_text(backlog_spike.wait_quantile(0.99))} against "
                f"{wait_text(cpu_spike.wait_quantile(0.99))}). The backlog asks for "
                f"{cluster.max_replicas} pods at its first sync; the default scale-up limit "
                f"(+{cluster.up_pods} pods or double per {cluster.policy_period:g} s) "
                "hands them out over rounds, and without it the peak's capacity came after "
                f"{seconds_text(unlimited.time_to_peak_capacity())}. The rest is the scrape, "
                f"the sync and the pods' start-up ({mean:.0f} s on average here). Requests "
                "already queued in a pod wait for that pod (new pods only take new requests), "
                "so the p99 wait follows how long the first pods were overloaded, and the "
                "target hardly matters, except for the headroom it leaves before the step "
                f"(p99 wait by target: {waits})."
            )
    best = highest_share_that_keeps_up(runs, curves)
    smooth = [n for n in names if n != "spike"]
    shares = swept_shares(runs)
    start_from = None
    if best is not None and smooth:
        lower = [share for share in shares if share < best]
        start_from = lower[-1] if lower else best
        higher = [share for share in shares if share > best]
        line = (
            f"- **The target.** {best:g} x threads is the highest target at which no request "
            f"waited over {wait_text(KEEPS_UP)} on the {' and the '.join(smooth)}"
        )
        if higher:
            over = find(runs, smooth[0], "io", "backlog", share=higher[0])
            if over is not None:
                line += (
                    f"; at {higher[0]:g}, {count_text(over.waited)} requests waited on the "
                    f"{smooth[0]}, up to {wait_text(over.longest_wait())}"
                )
        line += (
            ". A higher target leaves less room for the load that comes while new pods "
            f"start, and the HPA's tolerance lets a pod run {cluster.tolerance:.0%} above "
            "the target before it acts (at 0.9, 99% of the threads)."
        )
        if start_from != best:
            here = find(runs, day, "io", "backlog", share=start_from)
            there = find(runs, day, "io", "backlog", share=best)
            if here and there:
                line += (
                    f" Start one step lower, at {start_from:g}: it costs "
                    f"{here.pod_minutes / there.pod_minutes - 1:.0%} more pod-minutes on the "
                    f"{day} than {best:g}, less than the model's own rough edges (waits "
                    "within a step, balancing at random, one start-up time for all) may move "
                    "the edge."
                )
        lines.append(line)
    if slow:
        longest = ", ".join(
            f"{r.scenario.signal.share:g}: {wait_text(r.longest_wait())}"
            for r in slow
            if r.scenario.signal.metric == "backlog"
        )
        lines.append(
            f"- **Slower pods need a lower target.** With image pulls of {slow_cluster.pull:g} s "
            f"and scrapes every {slow_cluster.scrape:g} s, the longest wait on the ramp by "
            f"target was {longest}: the headroom a target leaves must cover the load's growth "
            "for as long as a new pod takes to serve."
        )
    same = find(runs, names[0], "io", "in-flight", share=DEFAULT_SHARE)
    summed = find(runs, names[0], "io", "backlog", share=DEFAULT_SHARE)
    if same and summed:
        lines.append(
            "- **In-flight alone is the metric.** `hurricane_http_requests_in_flight` counts a "
            "request from its headers to the end of its response, waiting for a worker "
            "included, so in-flight + backlog counts the waiting requests twice. Below the "
            "target nothing waits and the two read the same; once a queue builds, both are "
            "far above the target. The rows for in-flight alone match the sum's "
            f"(on the {names[0]}: {count_text(same.waited)} against "
            f"{count_text(summed.waited)} requests waited)."
        )
    component = inputs.in_flight_target
    if component is not None:
        io_day = find(runs, day, "io", "in-flight", share=component / io.concurrency)
        ours = find(runs, day, "io", "backlog", share=start_from or DEFAULT_SHARE)
        if io_day and ours:
            at_max = sum(n >= cluster.max_replicas for n in io_day.pods) / len(io_day.pods)
            share = component / io.concurrency
            verdict = (
                "is the share of the threads chosen above"
                if abs(share - (start_from or DEFAULT_SHARE)) < 0.02
                else f"is {share:.0%} of a `/sleep` pod's threads"
            )
            lines.append(
                f"- **{component:g} in flight per pod, the autoscaling components' target,** "
                f"{verdict}: a `/sleep` pod's pool grows to {io.concurrency:.0f} threads "
                f"while they wait, so {component:g} in flight holds it at "
                f"{component / io.service:,.0f} requests/s, {share:.0%} of what it serves. "
                f"The {day} took {io_day.pod_minutes:,.0f} pod-minutes on it (against "
                f"{ours.pod_minutes:,.0f} at {(start_from or DEFAULT_SHARE):g} x threads on "
                f"in-flight + backlog), with the pods at maxReplicas "
                f"({cluster.max_replicas}) {at_max:.0%} of the time."
            )
    plain_cpu = find(runs, day, "cpu", "cpu", cpu_request=request)
    plain_in_flight = next(
        (
            r
            for r in runs
            if r.curve.name == day
            and r.scenario.profile.key == "cpu"
            and r.scenario.signal.metric == "in-flight"
        ),
        None,
    )
    if plain_cpu and plain_in_flight:
        target = plain_in_flight.scenario.signal.target
        u = target / (1 + target)
        lines.append(
            "- **CPU-bound views need the CPU signal.** The threads of a `/plain` pod share "
            "one core, so its in-flight count grows as u / (1 - u) with the core's "
            f"utilization u: {target:g} in flight is {u:.0%} busy, 2 is 67%. The HPA's rule "
            "assumes a metric in proportion to each pod's load; at 2 in flight it halves "
            "the pods, which then run at 133%, and the count swings between too few pods "
            f"and many (on the {day}: {count_text(plain_in_flight.waited)} requests "
            f"waited, p99 {wait_text(plain_in_flight.wait_quantile(0.99))}; on CPU: "
            f"{count_text(plain_cpu.waited)}). CPU is in proportion to a CPU-bound pod's "
            "load, and in-flight to a waiting pod's (its busy threads), until it queues."
        )
    both = find(runs, day, "io", "in-flight+cpu", share=DEFAULT_SHARE)
    both_spike = find(runs, "spike", "io", "in-flight+cpu", share=DEFAULT_SHARE)
    if both is not None:
        text = (
            "- **Both metrics in one HPA.** The HPA follows whichever metric asks for more "
            f"pods: in-flight and CPU together cost on `/sleep` what CPU costs "
            f"({both.pod_minutes:,.0f} pod-minutes on the {day})"
        )
        if both_spike is not None:
            text += (
                " and keep the in-flight's response to a spike (the peak's capacity after "
                f"{seconds_text(both_spike.time_to_peak_capacity())})"
            )
        lines.append(text + ": the safe choice for an app that mixes both kinds of view.")
    if start_from:
        per_pod = start_from * io.concurrency
        lines += [
            "",
            "**What the docs should ship:** for apps whose views mostly wait (database, "
            "HTTP calls), the average of `hurricane_http_requests_in_flight` per pod with a "
            f"target of {per_pod:.0f} ({start_from:g} x `--max-workers`, "
            f"{io.concurrency:.0f} by default), through a custom-metrics adapter; for apps "
            f"whose views compute, the CPU target ({inputs.cpu_target:.0%}); for a mix, "
            "both in one HPA. A lower in-flight target when pods take longer than about "
            f"{cluster.slowest_startup:.0f} s to be ready, and, where spikes matter, a "
            "scaleUp policy that allows more than doubling per 15 s.",
        ]
    return lines


def report(
    runs: list[Result],
    slow: list[Result],
    inputs: Inputs,
    curves: list[Curve],
    slow_cluster: Cluster,
    command: str,
    elapsed: float,
) -> str:
    io, cpu = inputs.profiles["io"], inputs.profiles["cpu"]
    lines = [
        "# Autoscaling, simulated: CPU against the backlog",
        "",
        f"`{command}` ({elapsed:.0f} s). A model, not a cluster: "
        "[../README.md](../README.md#autoscaling-simulated-benchautoscalepy) says what it "
        "includes and what it leaves out. The figure: "
        "[autoscale.png](autoscale.png).",
        "",
        "## Inputs",
        "",
        "| input | value | from |",
        "|---|---:|---|",
    ]
    for f in inputs.figures:
        value = f"{f.value:,.3g}" if f.value < 1000 else f"{f.value:,.0f}"
        lines.append(f"| {f.what} | {value} {f.unit} | {f.source} |".replace("  |", " |"))
    lines += [
        "",
        "Curves (load in pods' worth: multiples of one pod's capacity; arrivals Poisson, seeded):",
        "",
    ]
    for curve in curves:
        first = next(r for r in runs if r.curve.name == curve.name)
        seeds = len(first.runs)
        lines.append(
            f"- {curve.name}, {seconds_text(curve.seconds)} in steps of {first.step:g} s, "
            f"{seeds} seed{'s' if seeds > 1 else ''}"
            f"{' (the tables show medians; the figure, the first seed)' if seeds > 1 else ''}: "
            f"{curve.description}."
        )
    lines += [
        "",
        f"## `/sleep`: {io.capacity:,.0f} requests/s and {io.concurrency:.0f} threads per pod",
        "",
        "Queued: requests waiting for a worker thread, all pods together. Requests that "
        "waited: for a worker, at all. Time to the peak's capacity: from the moment the load "
        "reached its peak until the ready pods could serve it (negative: they could "
        "before). At the /ready limit: pod-seconds with `HURRICANE_REQ_QUEUE_LEN` requests "
        "or more waiting, when the shipped readiness probe would take the pod out of the "
        "Service (not modelled: here those pods keep their traffic).",
        "",
    ]
    for curve in curves:
        lines += [f"### {curve.name}", ""]
        lines += result_table(
            [r for r in runs if r.curve.name == curve.name and r.scenario.profile.key == "io"]
        )
        lines.append("")
    lines += [
        "### The backlog target: waits against pod-minutes",
        "",
        *sweep_table(runs, curves, io),
        "",
    ]
    if slow:
        lines += [
            "### Slower pods and scrapes, on the ramp",
            "",
            *slow_table(
                [r for r in runs if r.curve.name == "ramp" and r.scenario.profile.key == "io"],
                slow,
                slow_cluster,
            ),
            "",
        ]
    lines += [
        f"### A CPU-bound view: `/plain`, {cpu.capacity:,.0f} requests/s per pod on one core",
        "",
    ]
    for curve in curves:
        chosen = [r for r in runs if r.curve.name == curve.name and r.scenario.profile.key == "cpu"]
        if chosen:
            lines += [f"{curve.name}:", "", *result_table(chosen), ""]
    lines += ["## Reading", "", *reading(runs, slow, inputs, curves, slow_cluster), ""]
    return "\n".join(lines)


# -- the plot -------------------------------------------------------------------------


def short_label(run: Result) -> str:
    signal = run.scenario.signal
    if signal.metric == "cpu":
        return f"CPU, {run.scenario.cluster.cpu_request * 1000:.0f}m"
    if signal.metric == "in-flight":
        return f"in-flight {signal.target:g}"
    return f"backlog {signal.share:g}"


PLOTTED = (
    ("cpu", "shipped", "#d62728", "-"),
    ("cpu", "1 core", "#f4a582", ":"),
    ("backlog", DEFAULT_SHARE, "#2166ac", "-"),
    ("in-flight", "components", "#1b9e77", "--"),
)


def plot(runs: list[Result], curves: list[Curve], inputs: Inputs, path: Path) -> None:
    """Per curve, a column: the offered load against what the ready pods can serve,
    the pods, and the requests waiting for a worker, for the shipped CPU target, CPU
    against a 1-core request, and the backlog at the default share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    request = inputs.cluster.cpu_request
    # Each curve whole, and the spike's step close up as well.
    panels: list[tuple[Curve, float, float]] = []
    for curve in curves:
        panels.append((curve, 0.0, curve.seconds))
        if curve.name == "spike":
            at = curve.peak()[1]
            panels.append((curve, max(0.0, at - 30), min(curve.seconds, at + 210)))
    columns = len(panels)
    figure, axes = plt.subplots(
        3, columns, figsize=(4.6 * columns + 0.8, 10.5), squeeze=False, sharex="col"
    )
    handles: dict[str, object] = {}
    for column, (curve, start, end) in enumerate(panels):
        close_up = (start, end) != (0.0, curve.seconds)
        scale, unit = (3600, "h") if curve.seconds > 7200 else (60, "min")
        chosen = []
        for metric, which, colour, style in PLOTTED:
            if metric == "cpu":
                wanted = request if which == "shipped" else 1.0
                run = find(runs, curve.name, "io", "cpu", cpu_request=wanted)
            elif metric == "in-flight":
                if inputs.in_flight_target is None:
                    continue
                share = inputs.in_flight_target / inputs.profiles["io"].concurrency
                run = find(runs, curve.name, "io", "in-flight", share=share)
            else:
                run = find(runs, curve.name, "io", "backlog", share=which)
            if run is not None:
                chosen.append((run, colour, style))
        if not chosen:
            continue
        load, pods, queue = (axes[row][column] for row in range(3))
        capacity = chosen[0][0].scenario.profile.capacity
        x = [s / scale for s in range(len(chosen[0][0].offered))]
        summary = []
        (line,) = load.plot(x, chosen[0][0].offered, color="black", lw=1.8)
        handles["offered load"] = line
        for run, colour, style in chosen:
            label = run.scenario.label
            load.plot(x, [n * capacity for n in run.ready], color=colour, ls=style, lw=1.2)
            (line,) = pods.plot(x, run.pods, color=colour, ls=style, lw=1.4)
            handles[label] = line
            queue.plot(x, [max(q, 0.5) for q in run.queued], color=colour, ls=style, lw=1.2)
            summary.append(
                f"p99 wait {wait_text(run.wait_quantile(0.99))}, "
                f"{run.pod_minutes:,.0f} pod-min: {short_label(run)}"
            )
        needed = math.ceil(curve.peak()[0] - 1e-9)
        pods.axhline(needed, color="grey", lw=0.8, ls="--")
        pods.text(
            0.99,
            needed,
            "pods the peak needs",
            transform=pods.get_yaxis_transform(),
            ha="right",
            va="bottom",
            fontsize=8,
            color="grey",
        )
        if close_up:
            load.set_title(f"{curve.name}: the step, close up", fontsize=11)
        else:
            load.set_title(f"{curve.name} ({curve.seconds / scale:g} {unit})", fontsize=11)
            seeds = len(chosen[0][0].runs)
            if seeds > 1:
                summary.insert(0, f"medians of {seeds} seeds (lines: the first)")
            queue.text(
                0.98,
                0.97,
                "\n".join(summary),
                transform=queue.transAxes,
                ha="right",
                va="top",
                fontsize=7.5,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
            )
        pods.yaxis.set_major_locator(MaxNLocator(integer=True))
        queue.set_yscale("log")
        queue.set_ylim(0.5, None)
        queue.set_xlabel(f"time ({unit})")
        for axis in (load, pods, queue):
            axis.grid(alpha=0.3)
            axis.set_xlim(start / scale, end / scale)
        if column == 0:
            load.set_ylabel("requests/s: offered (black)\nand what the ready pods serve")
            pods.set_ylabel("pods (starting, ready or stopping)")
            queue.set_ylabel("requests waiting for a worker\n(all pods, log scale)")
    figure.suptitle(
        f"Hurricane web pods serving {inputs.profiles['io'].name}: "
        "the HPA on CPU against the backlog (simulated)",
        fontsize=12,
    )
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        ncol=len(handles),
        fontsize=9,
        bbox_to_anchor=(0.5, 0.965),
        frameon=False,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- the command ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    first, examples = __doc__.split("\n\n")[:2]
    parser = argparse.ArgumentParser(
        description=f"{first}\n\n{examples}",
        epilog="The inputs come from --results and k8s-manifests, the model is described "
        "in bench/README.md; the report says where each figure comes from.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--curves",
        nargs="+",
        choices=list(CURVES),
        default=list(CURVES),
        metavar="CURVE",
        help=f"load curves to replay, of {', '.join(CURVES)} (default: all)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="length of every curve (default: ramp and spike 1800, diurnal 86400; the "
        "ramp and the day are stretched or compressed to fit, the spike steps up at "
        "minute 5 for 5 minutes, less on curves under 30 minutes)",
    )
    parser.add_argument(
        "--step",
        type=float,
        help="time step in seconds, dividing a second (default: 0.1, or 1 for curves "
        "over two hours)",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        type=float,
        default=list(TARGET_SHARES),
        metavar="SHARE",
        help="backlog targets to sweep, as shares of a pod's worker threads "
        f"(default: {' '.join(f'{t:g}' for t in TARGET_SHARES)}; {DEFAULT_SHARE:g} is "
        "always run)",
    )
    parser.add_argument(
        "--pull",
        type=float,
        default=SCHEDULE_AND_PULL_SECONDS,
        metavar="SECONDS",
        help="from the HPA's decision to a started container: scheduling, image pull, "
        f"container creation (default: {SCHEDULE_AND_PULL_SECONDS:g})",
    )
    parser.add_argument(
        "--scrape",
        type=float,
        default=SCRAPE_SECONDS,
        metavar="SECONDS",
        help=f"between metric scrapes (default: {SCRAPE_SECONDS:g})",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH / "results" / "async.md",
        metavar="FILE",
        help="a bench/servers.py report to read capacity, CPU per request and start-up "
        "from (default: bench/results/async.md)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="first seed of the arrivals and start-ups (default: 1)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        metavar="N",
        help="seeds per curve of up to two hours, the tables showing medians; longer "
        "curves run one (default: 3)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "results" / "autoscale.md",
        metavar="FILE",
        help="the report (default: bench/results/autoscale.md)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=BENCH / "results" / "autoscale.png",
        metavar="FILE",
        help="the figure (default: bench/results/autoscale.png)",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="draw no figure (matplotlib not needed)"
    )
    args = parser.parse_args(argv)
    if any(not 0 < share <= 1.5 for share in args.targets):
        parser.error("--targets are shares of the worker threads, above 0 and at most 1.5")
    if args.step is not None and (
        args.step <= 0 or abs(round(1 / args.step) * args.step - 1) > 1e-9
    ):
        parser.error("--step must divide a second (0.05, 0.1, 0.5, 1 ...)")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.seconds is not None and args.seconds < 60:
        parser.error("--seconds must be at least 60")
    return args


def slow_scenarios(inputs: Inputs, shares: Iterable[float]) -> tuple[Cluster, list[Scenario]]:
    """The shipped CPU target and the backlog targets again, with pods that take
    SLOW_PULL seconds more to pull and metrics scraped every SLOW_SCRAPE seconds."""
    slow = replace(inputs.cluster, pull=SLOW_PULL, scrape=SLOW_SCRAPE, scrape_phase=SLOW_SCRAPE / 2)
    chosen = [
        replace(s, cluster=slow)
        for s in scenarios(inputs, shares)
        if s.profile.key == "io"
        and len(s.signals) == 1
        and s.signal.metric in ("cpu", "backlog")
        and s.cluster.rate_limits
        and s.cluster.cpu_request == inputs.cluster.cpu_request
    ]
    return slow, chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    inputs = read_inputs(args.results, args.pull, args.scrape)
    curves = [
        CURVES[name](args.seconds) if args.seconds else CURVES[name]() for name in args.curves
    ]
    runs: list[Result] = []
    slow: list[Result] = []
    slow_cluster, slow_ones = slow_scenarios(inputs, args.targets)
    for curve in curves:
        step = args.step or default_step(curve.seconds)
        # Several seeds where a run is cheap; a day is smooth enough for one.
        seeds = range(args.seed, args.seed + (args.seeds if curve.seconds <= 7200 else 1))
        for scenario in scenarios(inputs, args.targets):
            runs.append(Result([simulate(scenario, curve, step, seed) for seed in seeds]))
        if curve.name == "ramp" and (args.pull, args.scrape) != (SLOW_PULL, SLOW_SCRAPE):
            for scenario in slow_ones:
                slow.append(Result([simulate(scenario, curve, step, seed) for seed in seeds]))
    command = "python bench/autoscale.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    if not args.no_plot:
        plot(runs, curves, inputs, args.plot)
    text = report(runs, slow, inputs, curves, slow_cluster, command, time.monotonic() - started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
