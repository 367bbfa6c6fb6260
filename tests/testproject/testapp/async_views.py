"""Async views for the ASGI path's tests. Gates and markers are files named in the
query string: a test opens a gate by creating its file, and learns that the view got
somewhere (or stopped) when a marker file appears."""

import asyncio
import hashlib
import os
import threading
import time

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from testapp import views
from testapp.views import write_marker

GATE_TIMEOUT = 30.0


async def wait_for_file(path: str) -> None:
    """Wait (on the loop, without blocking it) until ``path`` exists, at most 30 s."""
    deadline = time.monotonic() + GATE_TIMEOUT
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def hello(request):
    return HttpResponse("Hello from async")


async def meta(request):
    """What the ASGI scope told Django about the client (tests/test_proxy_headers.py)."""
    return JsonResponse(
        {
            "thread": threading.current_thread().name,
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "secure": request.is_secure(),
        }
    )


async def thread(request):
    """The name of the thread the view runs on (the main thread when it runs on the
    loop), and the module of the event loop that runs it (uvloop or asyncio)."""
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return JsonResponse({"thread": threading.current_thread().name, "loop": loop})


async def sync_thread(request):
    """The thread the request's thread-sensitive sync code runs on, after awaiting
    ?sleep= seconds (default none)."""
    await asyncio.sleep(float(request.GET.get("sleep", "0")))
    name = await sync_to_async(lambda: threading.current_thread().name)()
    return JsonResponse({"thread": name})


async def sleep(request):
    seconds = float(request.GET.get("seconds", "0.5"))
    await asyncio.sleep(seconds)
    return HttpResponse(f"slept {seconds}")


async def gate(request):
    """Writes the file ?entered= when it starts, then waits for the file ?file=; if
    it is cancelled meanwhile, it writes the file ?cancelled= first."""
    write_marker(request.GET.get("entered", ""), "entered")
    try:
        await wait_for_file(request.GET.get("file", ""))
    except asyncio.CancelledError:
        write_marker(request.GET.get("cancelled", ""), "cancelled")
        raise
    return HttpResponse("gate opened")


async def error(request):
    raise RuntimeError("this async view always fails")


async def bad_header(request):
    """An async view whose response carries a control character in a header value."""
    response = HttpResponse("never sent\n")
    response["X-Bad-Value"] = "a\x01b"
    return response


@csrf_exempt
async def upload(request):
    """Django's ASGI handler spooled the body to a file; reading it does not block."""
    return views.digest_of_body(request)


async def echo(request):
    body = request.body
    return JsonResponse(
        {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "method": request.method,
        }
    )


async def stream(request):
    """An async generator: a first chunk, then the second once the file ?gate= exists."""
    gate_file = request.GET.get("gate", "")

    async def chunks():
        yield b"first chunk\n"
        await wait_for_file(gate_file)
        yield b"second chunk\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def endless(request):
    """Streams a chunk every 20 ms (for at most 30 s); when the generator stops, it
    writes how into the file ?marker=."""
    marker = request.GET.get("marker", "")

    async def chunks():
        how = "exhausted"
        try:
            deadline = time.monotonic() + GATE_TIMEOUT
            number = 0
            while time.monotonic() < deadline:
                number += 1
                yield f"chunk {number}\n".encode()
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        except GeneratorExit:
            how = "closed"
            raise
        finally:
            write_marker(marker, how)

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def stream_error(request):
    """An async generator that fails after ?after= chunks."""
    after = int(request.GET.get("after", "0"))

    async def chunks():
        for number in range(after):
            yield f"chunk {number}\n".encode()
        raise RuntimeError("this async stream always fails")

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def big(request):
    """?chunks= chunks of 64 KiB; after each one is handed on, the number handed on so
    far is written to the file ?progress=."""
    count = int(request.GET.get("chunks", "16"))
    progress = request.GET.get("progress", "")
    block = b"x" * 65536

    async def chunks():
        for number in range(count):
            yield block
            write_marker(progress, str(number + 1))

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


async def sync_stream(request):
    """An async view whose streaming response has a plain (sync) iterator."""
    count = int(request.GET.get("count", "3"))
    return StreamingHttpResponse(
        (f"line {number}\n".encode() for number in range(count)), content_type="text/plain"
    )
