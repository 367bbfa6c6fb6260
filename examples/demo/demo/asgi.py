"""The demo as an ASGI application, for the live page: HTTP goes to Django as
usual, WebSockets at ``/ws/notes/`` to the notes feed. Settings name it in
``ASGI_APPLICATION`` only when Django Channels is installed."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
# Django first: it sets up the apps, which the consumers' imports need.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from notes.live import NotesFeed  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        # The page's Origin must be one of ALLOWED_HOSTS, so that another site's
        # page cannot open the feed in its visitors' browsers (the demo's "*" admits
        # any; name your hosts in a real project).
        "websocket": AllowedHostsOriginValidator(
            URLRouter([path("ws/notes/", NotesFeed.as_asgi())])
        ),
    }
)
