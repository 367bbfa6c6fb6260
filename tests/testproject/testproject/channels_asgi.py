"""A Django Channels project's ASGI application, as Channels' tutorial writes it:
HTTP to Django, WebSockets through the origin check, sessions and auth to the
consumers of testapp.ws_consumers."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.channels_settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from testapp import ws_consumers  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    [
                        path("ws/echo/", ws_consumers.EchoConsumer.as_asgi()),
                        path("ws/json/", ws_consumers.WhoAmIConsumer.as_asgi()),
                        path("ws/chat/<str:room>/", ws_consumers.ChatConsumer.as_asgi()),
                    ]
                )
            )
        ),
    }
)
