"""The Celery app the tests run (``celery -A testapp.celery_app worker|beat`` in
tests/testproject). The tests steer it with TEST_CELERY_* variables: the queue, the
Redis database of the results, the file a task writes when it finishes."""

import os
import time
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler
from celery.worker.control import control_command

import hurricane.celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

QUEUE = os.environ.get("TEST_CELERY_QUEUE", "hurricane-tests")
# The name beat's lock queue is named after: one per test, so that tests do not meet.
app = Celery(os.environ.get("TEST_CELERY_APP_NAME", "testapp"))
app.conf.update(
    broker_url=os.environ.get("TEST_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend=os.environ.get("TEST_CELERY_BACKEND", "redis://127.0.0.1:6379/5"),
    task_default_queue=QUEUE,
    task_acks_late=os.environ.get("TEST_CELERY_ACKS_LATE", "") == "1",
    # A task in hand when the worker's process is killed goes back to the queue.
    task_reject_on_worker_lost=os.environ.get("TEST_CELERY_ACKS_LATE", "") == "1",
    worker_prefetch_multiplier=int(os.environ.get("TEST_CELERY_PREFETCH", "4")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    beat_schedule=(
        {"tick": {"task": "testapp.celery_app.add", "schedule": 1.0, "args": (1, 1)}}
        if os.environ.get("TEST_CELERY_SCHEDULE") == "1"
        else {}
    ),
)
hurricane.celery.install(app)


@app.task
def add(x, y):
    return x + y


@app.task
def fail():
    raise ValueError("this task fails")


@app.task(bind=True, max_retries=1, default_retry_delay=0)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry()
    return "retried"


@app.task
def sleep(seconds, marker=None):
    time.sleep(seconds)
    if marker:
        Path(marker).write_text("done")
    return seconds


@app.task
def noop():
    return None


@control_command(args=[("seconds", float)], signature="<seconds>")
def hurricane_test_block_loop(state, seconds):
    """Holds the worker's consumer loop (control commands run on it): a hung loop."""
    time.sleep(seconds)
    return {"ok": "blocked"}


class StallingScheduler(PersistentScheduler):
    """Beat's scheduler, whose tick hangs while the file TEST_CELERY_STALL names exists."""

    def tick(self, *args, **kwargs):
        stall = os.environ.get("TEST_CELERY_STALL")
        while stall and os.path.exists(stall):
            time.sleep(0.1)
        return super().tick(*args, **kwargs)
