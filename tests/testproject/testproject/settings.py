"""Settings of the project the tests serve. The tests steer it with TEST_* variables."""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "tests-only"
DEBUG = os.environ.get("TEST_DEBUG", "") == "1"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "hurricane",
    "testapp",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "testproject.urls"
if os.environ.get("TEST_WSGI_APPLICATION"):
    WSGI_APPLICATION = os.environ["TEST_WSGI_APPLICATION"]
TEMPLATES = []
USE_TZ = True
TIME_ZONE = "UTC"

if os.environ.get("TEST_POSTGRES_DB"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["TEST_POSTGRES_DB"],
            "HOST": os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1"),
            "PORT": os.environ.get("TEST_POSTGRES_PORT", "5432"),
            "USER": os.environ.get("TEST_POSTGRES_USER", "postgres"),
            "CONN_MAX_AGE": int(os.environ.get("TEST_POSTGRES_CONN_MAX_AGE", "0")),
            # TEST_POSTGRES_CONNECT_TIMEOUT="" leaves libpq's default: wait forever.
            "OPTIONS": (
                {"connect_timeout": int(os.environ.get("TEST_POSTGRES_CONNECT_TIMEOUT", "2"))}
                if os.environ.get("TEST_POSTGRES_CONNECT_TIMEOUT", "2")
                else {}
            ),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("TEST_SQLITE", str(BASE_DIR / "test.sqlite3")),
        }
    }

STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("TEST_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
MEDIA_URL = "/media/"
MEDIA_ROOT = os.environ.get("TEST_MEDIA_ROOT", str(BASE_DIR / "media"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOG_PROBES = os.environ.get("TEST_LOG_PROBES", "") == "1"

# Any HURRICANE_* setting, as JSON: {"HURRICANE_PORT": 8123}.
globals().update(json.loads(os.environ.get("TEST_SETTINGS", "{}")))

if os.environ.get("TEST_DATABASE_CHECK_FLAG"):
    # As django-hurricane 1.6 projects did: a database check of the project's own in
    # place of hurricane.server.check_databases. It fails while the flag file exists.
    import hurricane.server

    def project_database_check():
        if os.path.exists(os.environ["TEST_DATABASE_CHECK_FLAG"]):
            raise RuntimeError("the project's own database check fails")
        return True

    hurricane.server.check_databases = project_database_check
