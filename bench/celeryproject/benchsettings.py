"""Django settings of the Celery benchmark's worker: hurricane.celery needs settings
(its probes run the system checks and query the database)."""

SECRET_KEY = "bench-only"
INSTALLED_APPS = ["hurricane"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
