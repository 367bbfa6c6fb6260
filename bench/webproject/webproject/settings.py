"""The HTTP benchmark's project: DEBUG off, minimal middleware, SQLite.

Every server in bench/servers.py serves this same project; the original
django-hurricane finds its own ``hurricane`` app under the same name.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "hurricane"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "webproject.urls"
WSGI_APPLICATION = "webproject.wsgi.application"
# Hurricane serves through ASGI when this is set: async views on its event loop.
# bench/ws_echo.py names its WebSocket echo instead.
ASGI_APPLICATION = os.environ.get("BENCH_ASGI_APPLICATION", "webproject.asgi.application")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DATABASE", str(BASE_DIR / "bench.sqlite3")),
    }
}
if os.environ.get("BENCH_POSTGRES_PORT"):
    # bench/soak.py: a PostgreSQL cluster of its own, which it stops and starts. A short
    # connect timeout, so that requests fail fast while the database is away.
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": os.environ["BENCH_POSTGRES_PORT"],
        "NAME": "postgres",
        "USER": "postgres",
        "OPTIONS": {"connect_timeout": 2},
    }
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Quiet: a log line per request would measure the terminal (bench/soak.py keeps the
# logs: BENCH_VERBOSE).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {
        "hurricane": {"handlers": ["null"], "level": "WARNING", "propagate": False},
        "tornado.access": {"handlers": ["null"], "level": "WARNING", "propagate": False},
    },
}
if os.environ.get("BENCH_VERBOSE"):
    LOGGING["loggers"]["hurricane"] = {"level": "INFO"}
