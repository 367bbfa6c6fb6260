"""A plain ASGI application with WebSocket endpoints and the lifespan protocol, for
tests/test_websockets.py (ASGI_APPLICATION = "testproject.ws_apps.application").
HTTP requests go to Django's handler. What the application sees of a connection's
end (``websocket.disconnect``) and of the lifespan is printed, one line each, for the
tests to read in the server's output."""

import asyncio
import json
import os

from testproject.asgi import application as django_application


def report(line: str) -> None:
    print(f"ws-app: {line}", flush=True)


async def lifespan(scope, receive, send):
    mode = os.environ.get("TEST_LIFESPAN", "ok")
    if mode == "unsupported":
        raise ValueError("no lifespan here")
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if mode == "fail":
                await send({"type": "lifespan.startup.failed", "message": "the cache is down"})
                return
            scope["state"]["greeting"] = "hello from lifespan"
            report("lifespan startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            report("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def until_disconnect(receive):
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            report(f"disconnect {message['code']}")
            return message


async def echo(scope, receive, send):
    """Echoes text and bytes; the text "close CODE REASON" closes with them."""
    subprotocol = "chat" if "chat" in scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            report(f"disconnect {message['code']}")
            return
        text = message.get("text")
        if text is not None and text.startswith("close "):
            _, code, reason = text.split(" ", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            await until_disconnect(receive)
            return
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def websocket(scope, receive, send):
    path = scope["path"]
    connect = await receive()
    assert connect["type"] == "websocket.connect", connect
    if path == "/ws/echo/":
        return await echo(scope, receive, send)
    if path == "/ws/deny/":
        await send({"type": "websocket.close", "code": 1000})
        return await until_disconnect(receive)
    if path == "/ws/deny-body/":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})
        return
    if path == "/ws/fail/":
        raise RuntimeError("failed before accepting")
    if path == "/ws/fail-after/":
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.05)
        raise RuntimeError("failed after accepting")
    if path == "/ws/return/":
        await send({"type": "websocket.accept"})
        return
    if path == "/ws/scope/":
        await send({"type": "websocket.accept", "headers": [(b"x-ws-header", b"yes")]})
        shown = {
            key: scope.get(key)
            for key in ("type", "scheme", "path", "query_string", "subprotocols", "http_version")
        }
        shown["query_string"] = scope["query_string"].decode()
        shown["client"] = list(scope["client"])
        shown["state"] = scope.get("state")
        shown["headers"] = {k.decode(): v.decode() for k, v in scope["headers"]}
        await send({"type": "websocket.send", "text": json.dumps(shown)})
        return await until_disconnect(receive)
    if path == "/ws/slow-accept/":
        # Decides late: the client may be gone by then.
        await asyncio.sleep(0.5)
        try:
            await send({"type": "websocket.accept"})
        except OSError as error:
            report(f"accept failed: {type(error).__name__}")
        return await until_disconnect(receive)
    if path == "/ws/idle/":
        await send({"type": "websocket.accept"})
        return await until_disconnect(receive)
    if path == "/ws/stalled/":
        # Accepts and never receives: the client's messages must wait in the kernel.
        await send({"type": "websocket.accept"})
        await asyncio.sleep(3600)
    if path == "/ws/flood/":
        # Sends 64 KiB messages as fast as the client takes them.
        await send({"type": "websocket.accept"})
        chunk = b"x" * 65536
        sent = 0
        try:
            while True:
                await send({"type": "websocket.send", "bytes": chunk})
                sent += 1
                if sent % 16 == 0:
                    report(f"flood sent {sent}")
        except OSError:
            report(f"flood stopped after {sent}")
            return
    await send({"type": "websocket.close", "code": 4404})


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    if scope["path"] == "/lifespan-state/":
        body = json.dumps(scope.get("state")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        return await send({"type": "http.response.body", "body": body})
    return await django_application(scope, receive, send)
