"""Django Channels served by ``serve``, unchanged: consumers as Channels' documentation
writes them (testapp/ws_consumers.py), behind ``AllowedHostsOriginValidator`` and
``AuthMiddlewareStack``, groups over channels_redis. The Redis on 127.0.0.1:6379
(TEST_REDIS_URL) is the channel layer every serving process shares."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
import requests
import websockets

from conftest import port_open

pytestmark = pytest.mark.skipif(
    not port_open(6379) and "TEST_REDIS_URL" not in os.environ,
    reason="needs Redis on 127.0.0.1:6379 for the channel layer",
)


def channels_env() -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "testproject.channels_settings",
        "TEST_CHANNELS_PREFIX": f"hurricane-test-{uuid.uuid4().hex[:8]}",
    }


def ws_url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def connect(server, path: str, **kwargs):
    """As a browser on the page's own origin: AllowedHostsOriginValidator refuses a
    handshake without an Origin unless ALLOWED_HOSTS holds "*"."""
    kwargs.setdefault("origin", f"http://127.0.0.1:{server.port}")
    return websockets.connect(ws_url(server, path), **kwargs)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


@pytest.fixture
def channels_server(serve):
    return lambda *args: serve("--cpu-affinity", "off", *args, env=channels_env())


def test_sync_async_and_json_consumers_with_sessions_and_the_origin_check(channels_server):
    server = channels_server()
    # A Channels router whose "http" is Django's handler: WebSockets go to the
    # router, HTTP the way Django's own handler goes (sync views in the pool).
    assert "(ASGI: WebSockets to the router, async views on the loop, sync views in the pool;" in (
        server.output
    )
    # Logged in over HTTP: the session cookie the handshake carries.
    session = requests.Session()
    assert session.get(server.url("/login-as/ada/"), timeout=10).status_code == 200
    cookie = "; ".join(f"{name}={value}" for name, value in session.cookies.items())

    async def talk():
        async with connect(server, "/ws/echo/") as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo: hi"
            await ws.send(b"\x01\x02")
            assert await ws.recv() == b"\x01\x02"
        async with connect(server, "/ws/json/", additional_headers={"Cookie": cookie}) as ws:
            await ws.send(json.dumps({"q": 1}))
            assert json.loads(await ws.recv()) == {"asked": {"q": 1}, "user": "ada"}
        async with connect(server, "/ws/json/") as ws:
            await ws.send(json.dumps({"q": 2}))
            assert json.loads(await ws.recv()) == {"asked": {"q": 2}, "user": None}
        # AllowedHostsOriginValidator: a foreign origin is refused before accepting.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(server, "/ws/echo/", origin="http://evil.example")
        with pytest.raises(websockets.InvalidStatus) as refused_without_origin:
            await websockets.connect(ws_url(server, "/ws/echo/"))
        assert refused_without_origin.value.response.status_code == 403
        assert refused.value.response.status_code == 403

    run(talk())
    # HTTP views still answer beside the consumers.
    assert requests.get(server.url("/hello/"), timeout=10).status_code == 200


def test_a_group_message_reaches_clients_of_two_serving_processes(channels_server):
    """THE test: two serving processes (--processes 2), a client in each, one group on
    the Redis channel layer; a message one client sends reaches both."""
    server = channels_server("--processes", "2", "--workers", "2")

    async def talk():
        clients: dict[str, websockets.ClientConnection] = {}
        spare = []
        # The processes take new connections in turn; keep opening until both have one.
        for _ in range(40):
            ws = await connect(server, "/ws/chat/lobby/")
            pid = (await ws.recv()).removeprefix("pid ")
            if pid in clients:
                spare.append(ws)
            else:
                clients[pid] = ws
            if len(clients) == 2:
                break
        assert len(clients) == 2, f"every connection went to process {list(clients)}"
        first, second = clients.values()
        sender_pid = next(iter(clients))
        await first.send("hello, both of you")
        expected = f"{sender_pid}: hello, both of you"
        assert await asyncio.wait_for(first.recv(), 10) == expected
        assert await asyncio.wait_for(second.recv(), 10) == expected
        for ws in [*clients.values(), *spare]:
            await ws.close()
        return list(clients)

    pids = run(talk())
    assert len(set(pids)) == 2


def test_http_behind_a_channels_router_runs_sync_views_in_the_worker_pool(channels_server):
    """A project that adds Channels keeps the HTTP speed it had: its sync views run in
    the worker pool as on the WSGI path, its async views on the loop, and neither
    hops through Django's thread-sensitive executor."""
    server = channels_server()

    def thread_of(path: str) -> str:
        response = requests.get(server.url(path), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["thread"]

    assert thread_of("/meta/").startswith("hurricane-worker-")
    assert thread_of("/async/thread/") == "MainThread"
    assert thread_of("/async/sync-thread/").startswith("hurricane-async-sync")
    # Channels' async_to_sync(channel_layer.group_send) in a sync view reaches the
    # server's loop, which owns the channel layer's queues and connections.
    assert thread_of("/async-to-sync-thread/") == "MainThread"
    # The router's session middleware is not involved on HTTP; Django's is.
    session = requests.Session()
    assert session.get(server.url("/login-as/grace/"), timeout=10).text == "logged in as grace\n"
    assert "sessionid" in session.cookies
