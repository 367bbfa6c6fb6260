"""Settings of Hurricane's demo project: DEBUG off, static files collected.

The database is SQLite (``DEMO_DATABASE``, a file) unless ``DEMO_DB_HOST`` names a
PostgreSQL server, as in the Kubernetes manifests, where every replica and the
migration Job must share one database. The password comes from ``DEMO_DB_PASSWORD``,
which the image's entrypoint reads from the file ``DEMO_DB_PASSWORD_FILE`` names (the
manifests list it in ``HURRICANE_FILE_VARS``).

The live page (``/live/``) needs Django Channels (``pip install -e ".[channels]"``).
With it installed, ``ASGI_APPLICATION`` names the demo's Channels router and ``serve``
takes WebSockets; without it, the demo serves its JSON API as before and the page says
what is missing. Its channel layer is Redis when ``DEMO_REDIS_URL`` names one (so that
a note saved by ``manage.py consume``, or by another serving process or pod, reaches
every open page), else one in memory, which reaches the pages of the process that
saved the note only.
"""

import importlib.util
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "false").lower() in ("1", "true", "yes")
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "hurricane",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"

DEMO_LIVE_PAGE = importlib.util.find_spec("channels") is not None
if DEMO_LIVE_PAGE:
    INSTALLED_APPS.append("channels")
    ASGI_APPLICATION = "demo.asgi.application"
    if os.environ.get("DEMO_REDIS_URL"):
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [os.environ["DEMO_REDIS_URL"]],
                    # Several demos (or tests) can share one Redis database.
                    "prefix": os.environ.get("DEMO_REDIS_PREFIX", "demo"),
                },
            }
        }
    else:
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

if os.environ.get("DEMO_DB_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["DEMO_DB_HOST"],
            "PORT": os.environ.get("DEMO_DB_PORT", "5432"),
            "NAME": os.environ.get("DEMO_DB_NAME", "demo"),
            "USER": os.environ.get("DEMO_DB_USER", "demo"),
            "PASSWORD": os.environ.get("DEMO_DB_PASSWORD", ""),
            # Fail fast when the database is gone, so readiness says so within a probe.
            "OPTIONS": {"connect_timeout": 3},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DEMO_DATABASE", str(BASE_DIR / "db.sqlite3")),
        }
    }

TEMPLATES = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True},
]
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("DEMO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
