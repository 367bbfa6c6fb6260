"""Settings of the consumer benchmark's project: as small as Hurricane allows, DEBUG
off (DEBUG keeps every query in memory, which a benchmark must not measure)."""

import os
import tempfile
from pathlib import Path

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["hurricane", "benchapp"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchsite.urls"
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # The handler never queries; the file only has to be somewhere writable.
        "NAME": os.environ.get(
            "BENCH_SQLITE", str(Path(tempfile.gettempdir()) / "hurricane-bench.sqlite3")
        ),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
