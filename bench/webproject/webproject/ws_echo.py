"""A WebSocket echo for bench/ws_echo.py: every message back as it came, nothing
else, so that what is measured is the server's own cost per message. HTTP requests
go to Django's handler."""

from webproject.asgi import application as django_application


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    if scope["type"] == "lifespan":
        raise ValueError("no lifespan")  # auto: serve without
    await django_application(scope, receive, send)
