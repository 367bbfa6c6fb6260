"""The demo's live page (examples/demo, /live/): a note saved over HTTP or consumed
from AMQP reaches the page's WebSocket, served by ``serve`` through the demo's Channels
router; across processes over channels_redis (Redis database 7, a prefix per test).
Without Channels installed, the demo serves its JSON API over WSGI as before, and the
page says what it needs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import uuid

import pytest
import requests
import websockets

from conftest import DEMO_PROJECT, ServeProcess, base_env, free_port, port_open, wait_until

# No other test uses this Redis database (test_channels.py uses 0, test_celery.py 5).
REDIS_DB = 7


def demo_env(tmp_path, **extra: str) -> dict[str, str]:
    return {
        "DEMO_DATABASE": str(tmp_path / "demo.sqlite3"),
        "DEMO_STATIC_ROOT": str(tmp_path / "static"),
        "DEMO_REDIS_URL": "",  # in memory, whatever the shell running the tests says
        **extra,
    }


def serve_demo(serve, tmp_path, **env: str) -> ServeProcess:
    return serve("--cpu-affinity", "off", cwd=DEMO_PROJECT, env=demo_env(tmp_path, **env))


def connect(server: ServeProcess, path: str = "/ws/notes/"):
    """As the page does, from its own origin."""
    return websockets.connect(
        f"ws://127.0.0.1:{server.port}{path}", origin=f"http://127.0.0.1:{server.port}"
    )


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_a_note_posted_over_http_reaches_every_open_live_page(serve, tmp_path):
    """One process, no Redis: Channels' in-memory layer carries the note from the
    view to the WebSockets of the same process."""
    server = serve_demo(serve, tmp_path)
    # Channels installed: the demo's router serves ("ASGI;", or "ASGI:" and what goes
    # where, depending on how serve splits the router's HTTP).
    assert re.search(r"Serving on port \d+ \(ASGI[;:]", server.output), server.output
    page = requests.get(server.url("/live/"), timeout=10)
    assert page.status_code == 200
    assert 'data-live="true"' in page.text
    assert "new WebSocket" in page.text

    async def watch():
        async with connect(server) as first, connect(server) as second:
            posted = await asyncio.to_thread(
                requests.post, server.url("/notes/"), json={"text": "live!"}, timeout=10
            )
            assert posted.status_code == 201, posted.text
            for ws in (first, second):
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == posted.json()

    run(watch())
    # The JSON API is as it was.
    assert [n["text"] for n in requests.get(server.url("/notes/"), timeout=10).json()["notes"]] == [
        "live!"
    ]


@pytest.mark.skipif(not port_open(6379), reason="needs Redis on 127.0.0.1:6379")
def test_a_note_consumed_from_amqp_in_another_process_reaches_the_live_page(
    serve, tmp_path, broker
):
    """``manage.py consume`` saves the note in its own process; channels_redis carries
    it to the WebSocket of the serving process."""
    prefix = f"demo-test-{uuid.uuid4().hex[:8]}"
    layer = {"DEMO_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}", "DEMO_REDIS_PREFIX": prefix}
    server = serve_demo(serve, tmp_path, **layer)

    names = broker.names()
    probe_port = free_port()
    consumer = ServeProcess(
        ["notes.consumers.NoteHandler", "--queue", names.queue, "--exchange", names.exchange]
        + ["--amqp-host", "127.0.0.1", "--amqp-port", "5672", "--probe-port", str(probe_port)],
        base_env(tmp_path, **demo_env(tmp_path, **layer)),
        DEMO_PROJECT,
        tmp_path / "consume.log",
        None,
        probe_port,
        command="consume",
    )
    try:
        consumer.wait_started()

        texts = [f"from the broker, {n}" for n in range(3)]

        async def watch() -> list[dict]:
            async with connect(server) as ws:
                bodies = [text.encode() for text in texts]
                await asyncio.to_thread(broker.publish, names.exchange, names.queue, bodies)
                return [json.loads(await asyncio.wait_for(ws.recv(), 20)) for _ in texts]

        notes = run(watch())
        assert [note["text"] for note in notes] == texts
        for note in notes:
            assert requests.get(server.url(f"/notes/{note['id']}/"), timeout=10).json() == note
        assert "missed note" not in consumer.output
    finally:
        consumer.kill()
        import redis

        client = redis.Redis(db=REDIS_DB)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)


def test_a_channel_layer_that_does_not_answer_costs_the_update_not_the_note(serve, tmp_path):
    """A "Redis" that takes connections and never answers: the POST is answered 201
    within the announcement's timeout, the note is saved, and one line says which
    note the live pages missed."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing reads them
        port = silent.getsockname()[1]
        server = serve_demo(serve, tmp_path, DEMO_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        posted = requests.post(server.url("/notes/"), json={"text": "kept"}, timeout=20)
        assert posted.status_code == 201, posted.text
        note = posted.json()
        assert requests.get(server.url(f"/notes/{note['id']}/"), timeout=10).json() == note
        line = f"WARNING notes.live The live pages missed note {note['id']}: TimeoutError"
        wait_until(lambda: line in server.output, 10, "the warning", server)


def test_without_channels_the_demo_serves_over_wsgi_and_the_page_says_why(serve, tmp_path):
    """As after the README's ``pip install -e .``, which brings no Channels: hidden
    from the server's Python here."""
    hide = tmp_path / "without-channels"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['channels'] = None\n")
    pythonpath = os.pathsep.join([str(hide), base_env(tmp_path)["PYTHONPATH"]])
    server = serve_demo(serve, tmp_path, PYTHONPATH=pythonpath)
    assert "(WSGI;" in server.output
    assert requests.post(server.url("/notes/"), json={"text": "hi"}, timeout=10).status_code == 201
    page = requests.get(server.url("/live/"), timeout=10)
    assert page.status_code == 200
    assert 'data-live="false"' in page.text
    assert "Not live: the page's WebSocket needs Django" in page.text
    assert 'pip install -e ".[channels]"' in page.text

    async def refused():
        with pytest.raises(websockets.InvalidStatus) as error:
            await connect(server)
        return error.value.response

    response = run(refused())
    assert response.status_code == 400
    assert b"No WebSockets here" in response.body
