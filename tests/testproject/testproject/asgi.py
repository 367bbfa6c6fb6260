"""ASGI applications of the test project; tests name one as ASGI_APPLICATION (through
TEST_SETTINGS)."""

import os

from django.core.asgi import get_asgi_application

from testproject.raw_heads import BODY, case_of

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


async def raw_heads(scope, receive, send):
    """/raw-head/?case=NAME[&stream=1]: a response of raw_heads.CASES, in one
    ``http.response.body`` message or in several (``more_body``); Django's handler
    answers the rest."""
    if scope["type"] != "http" or scope["path"] != "/raw-head/":
        return await application(scope, receive, send)
    status, headers, stream = case_of(scope["query_string"].decode("latin-1"))
    await send(
        {
            "type": "http.response.start",
            "status": int(status[:3]),
            "headers": [
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
            ],
        }
    )
    if stream:
        await send({"type": "http.response.body", "body": BODY[:1], "more_body": True})
        await send({"type": "http.response.body", "body": BODY[1:], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.body", "body": BODY})
