"""The benchmark project as a project that adds Django Channels writes its ASGI
application: HTTP to Django's handler, WebSockets to a router (here the echo of
ws_echo.py). `bench/servers.py --servers hurricane-channels` serves it."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webproject.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from webproject.ws_echo import application as echo  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": echo})
