"""The test project as a Django Channels project (tests/test_channels.py): the same
settings, plus Channels, sessions and auth, ASGI_APPLICATION naming a Channels
router, and a channel layer on Redis that every serving process shares."""

import os

from testproject.settings import *  # noqa: F403

INSTALLED_APPS = [  # noqa: F405
    *INSTALLED_APPS,  # noqa: F405
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    *MIDDLEWARE,  # noqa: F405
]
# AllowedHostsOriginValidator checks the Origin of a handshake against these.
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "testproject.channels_urls"
ASGI_APPLICATION = "testproject.channels_asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")],
            # One prefix per test: groups of parallel runs never meet.
            "prefix": os.environ.get("TEST_CHANNELS_PREFIX", "hurricane-tests"),
        },
    }
}
