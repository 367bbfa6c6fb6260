"""hurricane.celery in real Celery processes: ``celery -A testapp.celery_app worker``
(and ``beat``) in tests/testproject, against the local RabbitMQ, results in Redis.

Every test uses a queue and an app name of its own (deleted afterwards), so that
tests cannot take each other's tasks or beat lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.tcp_proxy import TcpProxy

from conftest import TEST_PROJECT, delete_celery_queue, free_port, wait_until

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_DB = 5
BACKEND = f"redis://127.0.0.1:6379/{REDIS_DB}"


class CeleryProcess:
    """One ``celery -A testapp.celery_app worker|beat`` with its probe port."""

    def __init__(self, kind: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.probe_port = int(env["HURRICANE_PROBE_PORT"])
        self.log_path = log
        self.log_file = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "testapp.celery_app", kind, *args],
            cwd=TEST_PROJECT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def probe(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.probe_port}{path}", timeout=5)

    def status(self, path: str) -> int | None:
        try:
            return self.probe(path).status_code
        except requests.RequestException:
            return None

    def metric(self, name: str, **labels: str) -> float:
        """The value of the sample ``name`` with exactly these labels on /metrics; 0
        when it is not there (yet)."""
        for family in text_string_to_metric_families(self.probe("/metrics").text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        wait_until(condition, timeout, what, server=self)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)
        self.log_file.close()


class Names:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.queue = f"hurricane-celery-test-{tag}"
        self.app = f"hurricane-test-{tag}"


@pytest.fixture
def names() -> Iterator[Names]:
    names = Names()
    yield names
    delete_celery_queue(names.queue)


@pytest.fixture
def celery(tmp_path: Path, names: Names) -> Iterator[Callable[..., CeleryProcess]]:
    """Starts celery processes for the test; kills what is left of them at its end."""
    started: list[CeleryProcess] = []

    def start(kind: str = "worker", *args: str, **env: str) -> CeleryProcess:
        environ = {
            **os.environ,
            "TEST_CELERY_QUEUE": names.queue,
            "TEST_CELERY_APP_NAME": names.app,
            "TEST_CELERY_BROKER": BROKER,
            "TEST_CELERY_BACKEND": BACKEND,
            "HURRICANE_PROBE_PORT": str(free_port()),
            **env,
        }
        if kind == "worker":
            args = ("--loglevel", "INFO", "-c", "2", "--without-gossip", *args)
        else:
            args = ("--loglevel", "INFO", "-s", str(tmp_path / f"schedule-{len(started)}"), *args)
        process = CeleryProcess(kind, list(args), environ, tmp_path / f"{kind}-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def client(names: Names, monkeypatch) -> Iterator:
    """The test app in this process, sending to the test's queue."""
    monkeypatch.syspath_prepend(str(TEST_PROJECT))
    # The app's module sets it when unset: undone after the test, for the others.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from testapp.celery_app import app

    app.conf.task_default_queue = names.queue
    app.conf.broker_url = BROKER
    app.conf.result_backend = BACKEND
    sent: list = []
    yield app, sent
    keys = [f"celery-task-meta-{result.id}" for result in sent]
    if keys:
        redis.Redis(db=REDIS_DB).delete(*keys)


def send(client, task: str, *args) -> object:
    app, sent = client
    result = app.tasks[f"testapp.celery_app.{task}"].delay(*args)
    sent.append(result)
    return result


def started(worker: CeleryProcess) -> bool:
    return worker.status("/startup") == 200


def draining_webhook(receiver) -> dict:
    """The readiness webhook that says the process drains (one may have failed
    earlier, before the broker was first reached), within 5 s."""
    hook = receiver.wait_for(
        lambda w: (
            w["type"] == "readiness"
            and w["status"] == "failed"
            and w.get("details", {}).get("problems") == ["draining"]
        ),
        5,
    )
    assert hook["details"]["problems"] == ["draining"]
    return hook


def test_probes_follow_the_broker_and_never_fail_liveness_for_it(celery, tmp_path):
    """Startup 400 until the worker consumes, then 200; a lost broker makes it unready
    (with its webhook) but alive; back, it is ready again."""
    proxy = TcpProxy(5672)
    proxy.refuse()
    try:
        worker = celery(
            TEST_CELERY_BROKER=f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
            HURRICANE_CELERY_LOOP_TIMEOUT="2",
        )
        worker.wait(lambda: worker.status("/alive") == 200, 30, "the probe server")
        time.sleep(3)  # longer than the loop timeout: the broker's absence is no hang
        assert worker.status("/startup") == 400
        ready = worker.probe("/ready")
        assert (ready.status_code, ready.text) == (400, "starting: not connected to the broker\n")
        assert worker.status("/alive") == 200

        proxy.resume()
        worker.wait(lambda: started(worker), 30, "startup")
        worker.wait(lambda: worker.status("/ready") == 200, 10, "readiness")
        assert worker.metric("hurricane_celery_connected") == 1

        proxy.refuse()
        proxy.cut()
        worker.wait(lambda: worker.status("/ready") == 400, 20, "unready without the broker")
        assert worker.probe("/ready").text == "not connected to the broker\n"
        time.sleep(3)
        assert worker.status("/alive") == 200
        assert worker.metric("hurricane_celery_connected") == 0

        proxy.resume()
        worker.wait(lambda: worker.status("/ready") == 200, 40, "ready after the broker is back")
        assert worker.metric("hurricane_celery_reconnects_total") == 1
    finally:
        proxy.close()


def test_a_stuck_task_keeps_the_worker_alive_and_a_backlog_makes_it_unready(celery, client):
    """One pool process held by a long task: the consumer loop still beats, so
    liveness stays 200 past --celery-loop-timeout; the tasks prefetched behind it
    wait, and from --req-queue-len of them on readiness fails, saying why."""
    worker = celery(
        "worker", "-c", "1", HURRICANE_REQ_QUEUE_LEN="2", HURRICANE_CELERY_LOOP_TIMEOUT="2"
    )  # fmt: skip
    worker.wait(lambda: worker.status("/ready") == 200, 30, "readiness")
    send(client, "sleep", 30)
    worker.wait(lambda: worker.metric("hurricane_celery_pool_busy") == 1, 10, "the task begun")
    for number in range(3):
        send(client, "add", number, 1)
    worker.wait(lambda: worker.status("/ready") == 400, 10, "unready with three waiting")
    assert worker.probe("/ready").text == "3 tasks wait for a pool process (limit 2)\n"
    assert worker.metric("hurricane_celery_tasks_reserved") == 3
    time.sleep(3)  # past the loop timeout: a busy pool is no hung loop
    assert worker.status("/alive") == 200
    assert worker.metric("hurricane_celery_pool_busy") == 1
    assert worker.metric("hurricane_celery_pool_idle") == 0


def test_task_metrics_count_each_task_once_by_name_and_outcome(celery, client):
    worker = celery()
    worker.wait(lambda: started(worker), 30, "startup")
    results = [send(client, "add", n, n) for n in range(3)]
    results += [send(client, "fail") for _ in range(2)]
    results.append(send(client, "retry_once"))
    for result in results:
        result.get(timeout=20, propagate=False)
    add, fail, retry = (f"testapp.celery_app.{name}" for name in ("add", "fail", "retry_once"))

    def finished(task: str, outcome: str) -> float:
        return worker.metric("hurricane_celery_tasks_finished_total", task=task, outcome=outcome)

    # The result is stored before the parent hears back from the pool process.
    worker.wait(lambda: finished(retry, "succeeded") == 1, 10, "the last callbacks")
    assert finished(add, "succeeded") == 3
    assert finished(add, "failed") == 0
    assert finished(fail, "failed") == 2
    assert finished(retry, "retried") == 1
    assert worker.metric("hurricane_celery_tasks_received_total", task=add) == 3
    assert worker.metric("hurricane_celery_tasks_received_total", task=retry) == 2
    assert worker.metric("hurricane_celery_tasks_started_total", task=fail) == 2
    assert worker.metric("hurricane_celery_task_run_seconds_count", task=add) == 3
    assert worker.metric("hurricane_celery_task_wait_seconds_count", task=add) == 3
    assert worker.metric("hurricane_celery_pool_idle") == 2
    assert worker.metric("hurricane_celery_pool_busy") == 0


def test_task_names_beyond_the_limit_count_as_other(celery, client):
    worker = celery(HURRICANE_CELERY_TASK_LABELS="1", HURRICANE_CELERY_TASK_LABEL="2")
    worker.wait(lambda: started(worker), 30, "startup")
    assert (
        "Unknown environment variable HURRICANE_CELERY_TASK_LABEL: Hurricane does not read "
        "it; did you mean HURRICANE_CELERY_TASK_LABELS?"
    ) in worker.output
    send(client, "add", 1, 2).get(timeout=20)
    send(client, "noop").get(timeout=20)
    received = "hurricane_celery_tasks_received_total"
    assert worker.metric(received, task="testapp.celery_app.add") == 1
    assert worker.metric(received, task="other") == 1
    assert worker.metric(received, task="testapp.celery_app.noop") == 0


def test_sigterm_fails_readiness_at_once_and_finishes_the_task_in_hand(
    celery, client, tmp_path, webhook_receiver
):
    worker = celery(HURRICANE_WEBHOOK_URL=webhook_receiver.url)
    worker.wait(lambda: started(worker), 30, "startup")
    worker.wait(lambda: worker.status("/ready") == 200, 10, "readiness")
    marker = tmp_path / "finished"
    result = send(client, "sleep", 3, str(marker))
    worker.wait(lambda: worker.metric("hurricane_celery_pool_busy") == 1, 10, "the task begun")

    worker.signal(signal.SIGTERM)
    # At once: within the moment the worker's main thread takes to run its handler.
    worker.wait(lambda: worker.status("/ready") == 503, 2, "readiness 503")
    draining = worker.probe("/ready")
    assert (draining.status_code, draining.text) == (503, "draining\n")
    draining_webhook(webhook_receiver)
    assert not marker.exists()
    assert worker.process.wait(20) == 0, worker.output
    assert marker.read_text() == "done"
    assert result.get(timeout=5) == 3


def test_with_acks_late_a_task_whose_worker_is_killed_goes_back_to_the_queue(
    celery, client, tmp_path
):
    """SIGTERM, then the end of the grace period (SIGKILL): the task in hand was not
    acknowledged, so the broker gives it to the next worker, which finishes it."""
    marker = tmp_path / "finished"
    first = celery(TEST_CELERY_ACKS_LATE="1")
    first.wait(lambda: started(first), 30, "startup")
    result = send(client, "sleep", 2, str(marker))
    first.wait(lambda: first.metric("hurricane_celery_pool_busy") == 1, 10, "the task begun")
    first.signal(signal.SIGTERM)
    first.kill()
    assert not marker.exists()

    second = celery(TEST_CELERY_ACKS_LATE="1")
    assert result.get(timeout=30) == 2
    assert marker.read_text() == "done"
    name = "testapp.celery_app.sleep"
    assert second.metric("hurricane_celery_tasks_finished_total", task=name, outcome="succeeded")


def test_a_hung_consumer_loop_fails_liveness_and_recovers(celery, client):
    worker = celery(HURRICANE_CELERY_LOOP_TIMEOUT="2")
    worker.wait(lambda: started(worker), 30, "startup")
    worker.wait(lambda: worker.status("/alive") == 200, 10, "liveness")
    app, _ = client
    # A control command runs on the worker's consumer loop: this one holds it 7 s.
    app.control.broadcast("hurricane_test_block_loop", arguments={"seconds": 7}, reply=False)
    worker.wait(lambda: worker.status("/alive") == 500, 10, "liveness failing")
    assert "consumer loop made no progress" in worker.probe("/alive").text
    assert "Liveness: failing: the worker's consumer loop made no progress" in worker.output
    worker.wait(lambda: worker.status("/alive") == 200, 15, "liveness back")


def test_beat_ticks_live_and_a_stalled_scheduler_fails_liveness(celery, tmp_path):
    stall = tmp_path / "stall"
    beat = celery(
        "beat",
        "--max-interval",
        "1",
        "-S",
        "testapp.celery_app:StallingScheduler",
        HURRICANE_CELERY_LOOP_TIMEOUT="2",
        TEST_CELERY_STALL=str(stall),
    )
    beat.wait(lambda: started(beat), 30, "startup")
    beat.wait(lambda: beat.status("/ready") == 200, 20, "readiness (the broker reached)")
    assert beat.status("/alive") == 200
    assert beat.metric("hurricane_celery_beat_ticks_total") >= 1
    stall.touch()
    beat.wait(lambda: beat.status("/alive") == 500, 10, "liveness failing")
    assert "the beat scheduler has not ticked" in beat.probe("/alive").text
    stall.unlink()
    beat.wait(lambda: beat.status("/alive") == 200, 10, "liveness back")


def test_sigterm_stops_beat_with_a_draining_webhook_and_exit_0(celery, tmp_path, webhook_receiver):
    beat = celery("beat", "--max-interval", "1", HURRICANE_WEBHOOK_URL=webhook_receiver.url)
    beat.wait(lambda: beat.status("/ready") == 200, 30, "readiness (the broker reached)")
    webhook_receiver.wait_for(lambda w: w["type"] == "readiness" and w["status"] == "succeeded", 5)
    beat.signal(signal.SIGTERM)
    # A readiness webhook may have failed earlier, while beat had not reached the
    # broker yet: the one looked for says "draining".
    draining_webhook(webhook_receiver)
    assert beat.process.wait(20) == 0, beat.output


def test_a_second_beat_is_logged_and_unready(celery, tmp_path):
    first = celery("beat", "--max-interval", "1")
    first.wait(lambda: first.status("/ready") == 200, 30, "the first beat ready")
    second = celery("beat", "--max-interval", "1")
    second.wait(lambda: started(second), 30, "the second beat started")
    second.wait(lambda: "Another celery beat runs" in second.output, 20, "the second beat's error")
    ready = second.probe("/ready")
    assert ready.status_code == 400
    assert ready.text.startswith("another celery beat holds the lock queue hurricane.celery.beat.")
    assert second.status("/alive") == 200
    first.kill()
    second.wait(lambda: second.status("/ready") == 200, 20, "the second beat taking over")


def test_a_bad_option_stops_the_worker_with_one_line_naming_it(celery):
    worker = celery(HURRICANE_CELERY_LOOP_TIMEOUT="soon")
    assert worker.process.wait(60) != 0
    expected = (
        "invalid value 'soon' for --celery-loop-timeout (from environment "
        "HURRICANE_CELERY_LOOP_TIMEOUT): expected a number of seconds above 0"
    )
    assert expected in worker.output


def test_the_celery_options_are_those_of_the_table_and_the_shared_defaults():
    """CeleryOptions resolves its own table; the shared fields the table leaves out
    (Celery runs the process) keep their defaults."""
    import dataclasses

    from hurricane.config.options import CELERY_OPTIONS, CeleryOptions, resolve

    options = resolve(CELERY_OPTIONS, {}, object(), {"HURRICANE_REQ_QUEUE_LEN": "3"})
    assert type(options) is CeleryOptions
    assert (options.probe_port, options.req_queue_len) == (8001, 3)
    assert options.celery_loop_timeout == 60.0
    table = {option.name for option in CELERY_OPTIONS}
    left_out = {field.name for field in dataclasses.fields(CeleryOptions)} - table
    assert left_out == {
        "sources", "warnings", "autoreload", "skip_checks", "graceful_timeout", "log_format",
        "log_level", "debugger", "debugger_port", "pycharm_host", "pycharm_port",
        "forbid_debugger",
    }  # fmt: skip


@pytest.mark.parametrize("metrics", [True, False])
@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_finished_task_request_is_freed_at_once_not_by_the_garbage_collector(metrics, outcome):
    """The worker's main process wraps each request's callbacks; once the task ended,
    nothing of Hurricane's keeps the request alive (a reference cycle per task would
    wait for the collector's passes, which cost the worker CPU per task)."""
    import gc
    import types
    import weakref

    from celery.worker.request import Request

    from hurricane.celery.worker import WorkerState
    from hurricane.config.options import CeleryOptions

    calls = []

    class Finished(Request):  # only what the main process's callbacks need
        def __init__(self) -> None:
            self.name = "testapp.celery_app.noop"

        eta = None

        def on_accepted(self, pid, time_accepted):
            calls.append("accepted")

        def on_success(self, failed__retval__runtime, **kwargs):
            calls.append("success")

        def on_failure(self, exc_info, *args, **kwargs):
            calls.append("failure")

    settings = types.SimpleNamespace(HURRICANE_NO_METRICS=not metrics)
    state = WorkerState(CeleryOptions.resolve({}, settings), time.monotonic(), lambda: 2)
    gc.disable()
    try:
        request = Finished()
        freed = weakref.ref(request)
        state.task_received(request)
        request.on_accepted(1, time.monotonic())
        if outcome == "succeeded":
            request.on_success((False, None, 0.01))
        else:
            request.on_failure(types.SimpleNamespace(exception=ValueError("x")))
        del request
        assert freed() is None
    finally:
        gc.enable()
    assert calls == ["accepted", "success" if outcome == "succeeded" else "failure"]
    assert state.tasks_handled == 1
