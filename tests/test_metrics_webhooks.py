"""Prometheus metrics on the probe port and webhooks on state changes, observed from
outside: real ``manage.py serve`` processes, a real HTTP receiver, real files."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import hurricane
from conftest import free_port
from hurricane.webhooks.base import ATTEMPTS

SIGNATURE_HEADER = "X-Hurricane-Signature"
SECRET = "s3cret"
VERSION = "1.2.3"
# Generous: a request that takes this long was blocked by something.
PROMPT = 2.0


# -- helpers: metrics ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(server) -> list[Sample]:
    response = requests.get(server.probe("/metrics"), timeout=5)
    assert response.status_code == 200, response.text
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def samples_of(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        sample
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def value_of(samples: list[Sample], name: str, **labels: str) -> float:
    matching = samples_of(samples, name, **labels)
    assert len(matching) == 1, f"{name}{labels}: expected one sample, found {matching}"
    return matching[0].value


def scrape_until(
    server, condition: Callable[[list[Sample]], bool], what: str, timeout: float = 10.0
) -> list[Sample]:
    """Scrape until ``condition`` holds: a request is counted as its response ends,
    which may be a moment after the client has read it."""
    deadline = time.monotonic() + timeout
    samples: list[Sample] = []
    while time.monotonic() < deadline:
        samples = scrape(server)
        with contextlib.suppress(AssertionError):
            if condition(samples):
                return samples
        time.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}; last scrape:\n"
        + "\n".join(f"{s.name}{s.labels} {s.value}" for s in samples)
        + f"\n--- serve output ---\n{server.output}"
    )


def get_all(session: requests.Session, urls: list[str], expected_status: int) -> None:
    for url in urls:
        response = session.get(url, timeout=10)
        assert response.status_code == expected_status, (url, response.status_code)


# -- helpers: webhooks -----------------------------------------------------------------------


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]  # lower-case names

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def kind(self) -> tuple[str, str]:
        return self.json["type"], self.json["status"]


class RawReceiver:
    """A real HTTP server recording each POST's raw body and headers (the raw body is
    what a signature covers). It answers ``status``, after ``delay`` seconds, and not
    before ``hold`` is set, if given."""

    def __init__(
        self, status: int = 200, delay: float = 0.0, hold: threading.Event | None = None
    ) -> None:
        self.deliveries: list[Delivery] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.deliveries.append(Delivery(body, headers))
                if delay:
                    time.sleep(delay)
                if hold is not None:
                    hold.wait(60)
                with contextlib.suppress(OSError):  # the sender may have given up
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kinds(self) -> list[tuple[str, str]]:
        return [delivery.kind for delivery in self.deliveries]

    def wait_for_count(self, kind: tuple[str, str], count: int, server, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kinds().count(kind) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} webhook(s) {kind}; received {self.kinds()}"
            f"\n--- serve output ---\n{server.output}"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiver(
    status: int = 200, delay: float = 0.0, hold: threading.Event | None = None
) -> Iterator[RawReceiver]:
    running = RawReceiver(status, delay, hold)
    try:
        yield running
    finally:
        if hold is not None:
            hold.set()  # let held requests end, or the server's shutdown waits for them
        running.close()


def expected_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def probe_times(server, path: str, expected: int, times: int = 3) -> None:
    for _ in range(times):
        response = requests.get(server.probe(path), timeout=10)
        assert response.status_code == expected, (path, response.status_code, response.text)


def settle() -> None:
    """Give a duplicate webhook, if the server wrongly sent one, time to arrive."""
    time.sleep(1.0)


# -- metrics ---------------------------------------------------------------------------------


def test_app_requests_fill_counters_histogram_and_legacy_metrics(serve):
    # A command's arguments may hold secrets: hurricane_info names the command only.
    server = serve("--media", "--command", "check", "--command", "showmigrations --verbosity 2")
    requests_sent = 7
    with requests.Session() as session:
        get_all(session, [server.url("/hello/")] * requests_sent, 200)
    brew = requests.request("BREW", server.url("/hello/"), timeout=10)

    def all_counted(samples: list[Sample]) -> bool:
        return value_of(samples, "request_counter_total") == requests_sent + 1

    samples = scrape_until(server, all_counted, "every app request to be counted")

    hello = {"method": "GET", "route": "hello/"}
    counted = value_of(samples, "hurricane_http_requests_total", status="200", **hello)
    assert counted == requests_sent
    # A method a client invents is counted as "other": labels stay bounded.
    assert (
        value_of(
            samples,
            "hurricane_http_requests_total",
            method="other",
            route="hello/",
            status=str(brew.status_code),
        )
        == 1
    )
    assert not samples_of(samples, "hurricane_http_requests_total", method="BREW")

    # The histogram's buckets fill: cumulative, the last finite one holds every request.
    buckets = samples_of(samples, "hurricane_http_request_duration_seconds_bucket", **hello)
    assert (
        value_of(samples, "hurricane_http_request_duration_seconds_bucket", le="+Inf", **hello)
        == requests_sent
    )
    finite = sorted((float(b.labels["le"]), b.value) for b in buckets if b.labels["le"] != "+Inf")
    assert finite, buckets
    counts = [count for _, count in finite]
    assert counts == sorted(counts), "bucket counts must be cumulative"
    assert counts[-1] == requests_sent
    observed = value_of(samples, "hurricane_http_request_duration_seconds_count", **hello)
    assert observed == requests_sent
    assert value_of(samples, "hurricane_http_request_duration_seconds_sum", **hello) > 0

    # The original library's families, names, labels and units.
    assert value_of(samples, "path_requests_total", method="GET", path="/hello/") == requests_sent
    assert value_of(samples, "path_requests_total", method="other", path="/hello/") == 1
    answered = requests_sent + 1
    assert value_of(samples, "response_time_seconds_count") == answered
    took = value_of(samples, "response_time_seconds_sum")
    assert value_of(samples, "response_time_seconds_bucket", le="+Inf") == answered
    # The mean, in milliseconds, of the same durations.
    average = value_of(samples, "response_time_average")
    assert average == pytest.approx(took / answered * 1000.0)
    assert value_of(samples, "response_size_bytes_count") == answered
    body_bytes = requests_sent * len(b"Hello from Hurricane") + len(brew.content)
    assert value_of(samples, "response_size_bytes_sum") == body_bytes
    assert value_of(samples, "response_size_bytes_bucket", le="256.0") == answered
    assert value_of(samples, "request_queue_length") == 0
    startup = value_of(samples, "startup_time")
    assert 0 < startup < 60
    assert value_of(samples, "hurricane_startup_duration_seconds") == pytest.approx(startup)
    assert value_of(samples, "hurricane_http_request_backlog") == 0

    info = samples_of(samples, "hurricane_info")
    assert len(info) == 1, info
    assert info[0].labels["version"] == hurricane.__version__
    assert info[0].labels == {
        **info[0].labels,
        "server_port": str(server.port),
        "probe_port": str(server.probe_port),
        "serve_static": "false",
        "serve_media": "true",
        "commands": "check,showmigrations",
    }
    assert float(info[0].labels["startup_time_seconds"]) == pytest.approx(startup, abs=1e-4)
    assert value_of(samples, "process_resident_memory_bytes") > 1_000_000


def test_route_labels_stay_bounded_and_custom_metrics_appear(serve):
    server = serve()
    with requests.Session() as session:

        def one_round(first: int) -> list[Sample]:
            pks = range(first, first + 60)
            get_all(session, [server.url(f"/things/{pk}/") for pk in pks], 200)
            get_all(session, [server.url(f"/nowhere-{pk}/at/all/") for pk in pks], 404)
            return scrape_until(
                server,
                lambda s: value_of(s, "request_counter_total") == first + 120 - 1,
                f"the requests up to round starting at {first} to be counted",
            )

        first = one_round(1)
        second = one_round(121)

    def series(samples: list[Sample]) -> set[tuple]:
        return {
            tuple(sorted(sample.labels.items()))
            for sample in samples
            if sample.name.startswith("hurricane_http_request")
        }

    for samples, things in ((first, 60), (second, 120)):
        counted = samples_of(samples, "hurricane_http_requests_total")
        assert {sample.labels["route"] for sample in counted} == {"things/<int:pk>/", "unmatched"}
        assert (
            value_of(
                samples, "hurricane_http_requests_total", route="things/<int:pk>/", status="200"
            )
            == things
        )
        assert (
            value_of(samples, "hurricane_http_requests_total", route="unmatched", status="404")
            == things
        )
        # The original library's path label: the matched pattern, never the raw path.
        assert {
            sample.labels["path"]: sample.value
            for sample in samples_of(samples, "path_requests_total", method="GET")
        } == {"/things/<int:pk>/": things, "unmatched": things}
        # The documented framework's custom counter, and prometheus_client's own.
        assert value_of(samples, "testapp_things_viewed_total") == things
        assert value_of(samples, "testapp_things_viewed_client_total") == things
    # Twice as many distinct URLs, not one series more.
    assert series(first) == series(second)
    assert len(samples_of(second, "hurricane_http_requests_total")) == 2
    assert len(samples_of(second, "path_requests_total")) == 2


def test_custom_metrics_of_every_kind_appear_once_with_their_values(serve):
    """Metrics of the documented framework with an instrument of their own (as 1.6's
    were written), calculated ones and async ones: each family once (a family twice
    fails the whole scrape in Prometheus), with the value the metric gives."""
    server = serve()
    with requests.Session() as session:
        get_all(session, [server.url(f"/things/{pk}/") for pk in range(3)], 200)
    samples = scrape_until(
        server, lambda s: value_of(s, "request_counter_total") == 3, "the requests to be counted"
    )
    assert value_of(samples, "testapp_things_ordered_total") == 3
    assert value_of(samples, "testapp_double_things") == 6
    assert value_of(samples, "testapp_async_stock") == 42
    assert value_of(samples, "testapp_async_shelves") == 7
    text = requests.get(server.probe("/metrics"), timeout=5).text
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(declared) == len(set(declared)), sorted(declared)
    assert "never awaited" not in server.output


def test_backlog_and_in_flight_while_requests_wait_for_the_only_worker(serve, tmp_path):
    server = serve("--workers", "1", "--max-workers", "1")
    gate = tmp_path / "open-gate"
    results: list[int] = []

    def held_request() -> None:
        results.append(requests.get(server.url(f"/gate/?file={gate}"), timeout=60).status_code)

    threads = [threading.Thread(target=held_request, daemon=True) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        # One scrape reads its metrics one after another: the documented
        # request_queue_length comes first, and may see the queue a moment earlier.
        samples = scrape_until(
            server,
            lambda s: (
                value_of(s, "hurricane_http_request_backlog") >= 1
                and value_of(s, "request_queue_length") >= 1
            ),
            "requests to wait for the only worker",
        )
        assert value_of(samples, "hurricane_http_requests_in_flight") >= 1
        # The pool's one thread is busy: a busy share of 1.
        assert value_of(samples, "hurricane_http_worker_threads") == 1
        assert value_of(samples, "hurricane_http_worker_threads_busy") == 1
    finally:
        gate.touch()
        for thread in threads:
            thread.join(60)
    assert results == [200, 200, 200]
    samples = scrape_until(
        server,
        lambda s: (
            value_of(s, "hurricane_http_request_backlog") == 0
            and value_of(s, "hurricane_http_requests_in_flight") == 0
            and value_of(s, "hurricane_http_worker_threads_busy") == 0
        ),
        "the backlog to empty",
    )
    assert value_of(samples, "hurricane_http_requests_total", route="gate/", status="200") == 3


def test_the_pools_busy_share_is_added_up_over_the_serving_processes(serve, tmp_path):
    """With --processes 2, the supervisor's /metrics gives the worker threads and the
    busy ones of both serving processes, from the rows they write every heartbeat."""
    server = serve("--processes", "2", "--workers", "2", "--max-workers", "2")
    samples = scrape_until(
        server,
        lambda s: value_of(s, "hurricane_http_worker_threads") == 4,
        "both processes' threads reported",
    )
    assert value_of(samples, "hurricane_http_worker_threads_busy") == 0
    gate = tmp_path / "open-gate"
    results: list[int] = []

    def held_request() -> None:
        results.append(requests.get(server.url(f"/gate/?file={gate}"), timeout=60).status_code)

    held = threading.Thread(target=held_request, daemon=True)
    try:
        held.start()
        scrape_until(
            server,
            lambda s: value_of(s, "hurricane_http_worker_threads_busy") == 1,
            "one busy thread reported",
        )
    finally:
        gate.touch()
        held.join(60)
    assert results == [200]


def test_no_metrics_removes_the_endpoint_and_the_app_still_works(serve):
    server = serve("--no-metrics")
    assert requests.get(server.url("/hello/"), timeout=5).status_code == 200
    assert requests.get(server.probe("/metrics"), timeout=5).status_code == 404
    assert requests.get(server.probe("/alive"), timeout=5).status_code == 200
    assert requests.get(server.probe("/ready"), timeout=5).status_code == 200
    assert requests.get(server.url("/hello/"), timeout=5).status_code == 200


# -- webhooks --------------------------------------------------------------------------------


def test_webhooks_arrive_once_per_state_change_signed_with_the_secret(serve, tmp_path):
    liveness_flag = tmp_path / "liveness-fails"
    readiness_flag = tmp_path / "readiness-fails"
    env = {
        "TEST_SETTINGS": json.dumps({"HURRICANE_VERSION": VERSION}),
        "TEST_LIVENESS_FAIL_FLAG": str(liveness_flag),
        "TEST_READINESS_FAIL_FLAG": str(readiness_flag),
    }
    with receiver() as hooks:
        server = serve("--webhook-url", hooks.url, "--webhook-secret", SECRET, env=env)
        hooks.wait_for_count(("startup", "succeeded"), 1, server)

        # django-hurricane 1.6's payload; Hurricane's own facts under "details".
        startup = hooks.deliveries[0].json
        assert set(startup) == {
            "type", "info", "status", "timestamp", "podname", "version", "details"
        }  # fmt: skip
        assert startup["info"] == "Startup webhook"
        assert isinstance(startup["timestamp"], int)
        assert abs(time.time() - startup["timestamp"]) < 60
        assert startup["podname"] == socket.gethostname()
        assert startup["version"] == VERSION
        assert startup["details"]["startup_seconds"] > 0

        # The first answer of each probe is a change (as in 1.6), later equal ones are not.
        probe_times(server, "/alive", 200)
        hooks.wait_for_count(("liveness", "succeeded"), 1, server)
        probe_times(server, "/ready", 200)
        hooks.wait_for_count(("readiness", "succeeded"), 1, server)

        liveness_flag.touch()
        probe_times(server, "/alive", 500)
        hooks.wait_for_count(("liveness", "failed"), 1, server)
        liveness_flag.unlink()
        probe_times(server, "/alive", 200)
        hooks.wait_for_count(("liveness", "succeeded"), 2, server)

        readiness_flag.touch()
        probe_times(server, "/ready", 400)
        hooks.wait_for_count(("readiness", "failed"), 1, server)
        readiness_flag.unlink()
        probe_times(server, "/ready", 200)
        hooks.wait_for_count(("readiness", "succeeded"), 2, server)
        settle()

        assert hooks.kinds() == [
            ("startup", "succeeded"),
            ("liveness", "succeeded"),
            ("readiness", "succeeded"),
            ("liveness", "failed"),
            ("liveness", "succeeded"),
            ("readiness", "failed"),
            ("readiness", "succeeded"),
        ]
        payloads = [delivery.json for delivery in hooks.deliveries]
        assert any(
            "testapp.E001" in p or "liveness flag" in p for p in payloads[3]["details"]["problems"]
        )
        assert any(
            "testapp.E002" in p or "readiness flag" in p for p in payloads[5]["details"]["problems"]
        )
        assert [p["info"] for p in payloads[1:3]] == ["Liveness webhook", "Readiness webhook"]
        assert "traceback" not in payloads[0]
        for delivery in hooks.deliveries:
            assert delivery.headers.get(SIGNATURE_HEADER.lower()) == expected_signature(
                delivery.body
            ), delivery.json
            assert delivery.json["podname"] == socket.gethostname()
            assert delivery.json["version"] == VERSION


@pytest.mark.parametrize("secret_from", ["environment", "nowhere"])
def test_webhook_signature_from_the_environment_or_none_without_a_secret(serve, secret_from):
    env = {"HURRICANE_WEBHOOK_SECRET": SECRET} if secret_from == "environment" else {}
    with receiver() as hooks:
        server = serve("--webhook-url", hooks.url, env=env)
        hooks.wait_for_count(("startup", "succeeded"), 1, server)
        probe_times(server, "/ready", 200, times=1)
        hooks.wait_for_count(("readiness", "succeeded"), 1, server)
        for delivery in hooks.deliveries:
            if secret_from == "environment":
                assert delivery.headers.get(SIGNATURE_HEADER.lower()) == expected_signature(
                    delivery.body
                )
            else:
                assert SIGNATURE_HEADER.lower() not in delivery.headers, delivery.headers


def serve_promptly_for(server, seconds: float) -> int:
    """Ask /hello/ and /alive over and over for ``seconds``; each must answer 200 promptly."""
    deadline = time.monotonic() + seconds
    answered = 0
    while time.monotonic() < deadline:
        for url in (server.url("/hello/"), server.probe("/alive")):
            began = time.monotonic()
            response = requests.get(url, timeout=PROMPT + 3)
            took = time.monotonic() - began
            assert response.status_code == 200, (url, response.status_code)
            assert took < PROMPT, f"{url} took {took:.2f} s while webhooks were retried"
            answered += 1
        time.sleep(0.05)
    return answered


@pytest.mark.parametrize("broken", ["down", "slow", "failing"])
def test_a_broken_receiver_changes_nothing_about_serving(serve, broken):
    with contextlib.ExitStack() as stack:
        if broken == "down":
            url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
            hooks = None
        else:
            hooks = stack.enter_context(
                receiver(status=500) if broken == "failing" else receiver(delay=8.0)
            )
            url = hooks.url
        server = serve("--webhook-url", url)
        # A readiness change queues one more webhook behind the startup one.
        assert requests.get(server.probe("/ready"), timeout=PROMPT).status_code == 200
        assert serve_promptly_for(server, 9.0 if broken == "slow" else 3.0) > 10

        if broken == "slow":
            # The first attempt timed out and the webhook was sent again.
            assert hooks is not None
            assert hooks.kinds().count(("startup", "succeeded")) >= 2, hooks.kinds()
            return
        # django-hurricane 1.6's words, the receiver's URL whole (/hook is a public
        # word): each failed attempt at once, then one warning when it gives up.
        cause = "answer 500" if broken == "failing" else "ConnectionError"
        failed = f"Sending webhook to {url} has failed due to {cause} (startup webhook, "
        given_up = f"WARNING hurricane.webhooks {failed}{ATTEMPTS} attempts)"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and given_up not in server.output:
            time.sleep(0.1)
        lines = [line for line in server.output.splitlines() if failed in line]
        assert [line.partition(" hurricane.webhooks ")[2] for line in lines] == [
            f"{failed}attempt {n} of {ATTEMPTS}); trying again in {0.5 * 2 ** (n - 1):.1f} s"
            for n in range(1, ATTEMPTS)
        ] + [given_up.partition(" hurricane.webhooks ")[2]], server.output
        if broken == "failing":
            assert hooks is not None
            assert hooks.kinds().count(("startup", "succeeded")) == ATTEMPTS
        assert serve_promptly_for(server, 0.5) > 0
