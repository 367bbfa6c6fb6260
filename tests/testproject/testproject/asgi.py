"""ASGI applications of the test project; tests name one as ASGI_APPLICATION (through
TEST_SETTINGS)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

# Django's own handler: Hurricane sends async views to it, sync views to the pool.
application = get_asgi_application()


class AddHeader:
    """A tiny ASGI middleware: every HTTP response gets ``X-ASGI-Middleware: yes``. Not
    Django's handler, so Hurricane must send every request through it."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        async def send_with_header(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-asgi-middleware", b"yes"))
                message = {**message, "headers": headers}
            await send(message)

        await self.inner(scope, receive, send_with_header)


with_header = AddHeader(application)
