import hashlib
import os
import threading
import time
import warnings
from pathlib import Path

from asgiref.sync import async_to_sync
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from testapp.models import Item


def hello(request):
    return HttpResponse("Hello from Hurricane")


def cookies(request):
    """Two Set-Cookie headers: a name that repeats needs a header line per value."""
    response = HttpResponse("two cookies\n")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2")
    return response


def slow(request):
    seconds = float(request.GET.get("seconds", "0.5"))
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds}")


def stream(request):
    """Yields a first chunk, then waits for the file named by ?gate= to exist before
    the second: the test can prove the first arrived while the view still ran."""
    gate = request.GET.get("gate", "")

    def chunks():
        yield b"first chunk\n"
        deadline = time.monotonic() + 30
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield b"second chunk\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def file(request):
    return FileResponse(open(__file__, "rb"), content_type="text/x-python")


@csrf_exempt
def echo(request):
    body = request.body
    return JsonResponse(
        {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "method": request.method,
        }
    )


def digest_of_body(request) -> JsonResponse:
    """The body's length and hash, read a piece at a time as an upload handler reads
    it: the view holds no copy."""
    digest, length = hashlib.sha256(), 0
    while piece := request.read(65536):
        digest.update(piece)
        length += len(piece)
    return JsonResponse({"length": length, "sha256": digest.hexdigest()})


@csrf_exempt
def upload(request):
    return digest_of_body(request)


def write_marker(path: str, text: str) -> None:
    """Write ``text`` to ``path`` at once: a reader never sees it half written."""
    if path:
        partial = Path(f"{path}.partial")
        partial.write_text(text)
        os.replace(partial, path)


def big(request):
    """A whole response of ``?mb=`` MiB (8 unless given)."""
    return HttpResponse(b"x" * int(float(request.GET.get("mb", "8")) * 2**20))


def big_stream(request):
    """A streamed response of ``?chunks=`` chunks of 64 KiB; after each one is handed
    on, the number handed on so far is written to the file ?progress=, and how the
    generator ended ("exhausted" or "closed") to the file ?ended=."""
    count = int(request.GET.get("chunks", "16"))
    progress, ended = request.GET.get("progress", ""), request.GET.get("ended", "")
    block = b"x" * 65536

    def chunks():
        how = "closed"
        try:
            for number in range(count):
                yield block
                write_marker(progress, str(number + 1))
            how = "exhausted"
        finally:
            write_marker(ended, how)

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


_held: list[bytearray] = []


def hold(request):
    """Keeps ``?mb=`` MB more, written so that it is resident: a leak to order."""
    _held.append(bytearray(b"\x01") * (int(request.GET.get("mb", "10")) * 2**20))
    return HttpResponse(f"holding {sum(map(len, _held)) // 2**20} MB")


def error(request):
    raise RuntimeError("this view always fails")


def warn(request):
    warnings.warn("this view always warns", UserWarning, stacklevel=1)
    return HttpResponse("warned")


def items(request):
    if request.method == "POST":
        Item.objects.create(name="x")
    return JsonResponse({"count": Item.objects.count()})


def meta(request):
    return JsonResponse(
        {
            "thread": threading.current_thread().name,
            "pid": os.getpid(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "secure": request.is_secure(),
            "path": request.path,
            "query": request.GET.dict(),
            "host": request.get_host(),
            "x_custom": request.META.get("HTTP_X_CUSTOM"),
        }
    )


def async_to_sync_thread(request):
    """The thread a coroutine run by ``async_to_sync`` in this sync view runs on, as
    Channels' ``async_to_sync(channel_layer.group_send)`` does."""

    async def where():
        return threading.current_thread().name

    return JsonResponse({"thread": async_to_sync(where)()})


def gate(request):
    """Holds its worker until the file named by ?file= exists (at most 30 s), then
    answers with the worker thread's name: tests fill the pool deterministically."""
    flag = request.GET.get("file", "")
    deadline = time.monotonic() + 30
    while flag and not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.02)
    return HttpResponse(threading.current_thread().name)


def stream_error(request):
    """A streaming response whose body fails before its first chunk."""

    def chunks():
        raise RuntimeError("this stream always fails")
        yield b"never"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def bad_header(request):
    """A response with a header no HTTP response may carry: ?name= (a space in a
    field name) or a control character in the value, on a whole or a streamed
    response (?stream=1); ?status= puts a line break in the reason phrase."""
    if request.GET.get("stream"):
        response = StreamingHttpResponse(iter([b"never sent\n"]), content_type="text/plain")
    else:
        response = HttpResponse("never sent\n")
    if request.GET.get("status"):
        response.reason_phrase = "OK\r\nX-Injected: 1"
    elif request.GET.get("name"):
        response["Bad Name"] = "1"
    else:
        response["X-Bad-Value"] = "a\x01b"
    return response


def thing(request, pk):
    from testapp.metrics import ThingsOrderedMetric, ThingsViewedMetric, things_viewed

    ThingsViewedMetric.increment()
    ThingsOrderedMetric.increment()
    things_viewed.inc()
    return JsonResponse({"pk": pk})


def db(request):
    """Asks the database for its clock: needs no table, so it works on any database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        (now,) = cursor.fetchone()
    return JsonResponse({"now": str(now)})
