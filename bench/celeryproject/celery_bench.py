"""The Celery app bench/celery.py runs: ``celery -A celery_bench worker`` in this
folder. BENCH_HURRICANE=1 installs hurricane.celery; each task counts itself in Redis
(BENCH_COUNTER), so that the benchmark sees the first and the last task end."""

import os
import time

import redis
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsettings")

app = Celery("celery_bench")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    task_default_queue=os.environ.get("BENCH_QUEUE", "hurricane-bench"),
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if os.environ.get("BENCH_HURRICANE") == "1":
    import hurricane.celery

    hurricane.celery.install(app)

_redis = redis.Redis(db=int(os.environ.get("BENCH_REDIS_DB", "6")))
COUNTER = os.environ.get("BENCH_COUNTER", "hurricane-bench-counter")


@app.task
def noop():
    _redis.incr(COUNTER)


@app.task
def sleep_10ms():
    time.sleep(0.01)
    _redis.incr(COUNTER)
