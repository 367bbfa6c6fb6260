import asyncio
import time

from django.contrib.contenttypes.models import ContentType
from django.http import HttpResponse, JsonResponse

PAYLOAD = {f"key{i}": f"value number {i}" for i in range(20)}


def plain(request):
    return HttpResponse(b"Hello, world!", content_type="text/plain")


def json_view(request):
    return JsonResponse(PAYLOAD)


def db(request):
    return JsonResponse({"count": ContentType.objects.count()})


# What /grow keeps: bench/soak.py grows the process past --max-memory with it.
_hoard: list[bytearray] = []


def grow(request):
    """Holds ``?mib=`` (default 10) MiB more; answers how much it holds."""
    mib = int(request.GET.get("mib", "10"))
    if mib:
        _hoard.append(bytearray(b"\x01") * (mib * 2**20))  # written, so resident
    held = sum(len(block) for block in _hoard) // 2**20
    return HttpResponse(f"{held} MiB held".encode(), content_type="text/plain")


def sleep(request):
    time.sleep(0.05)  # a slow upstream call, blocking
    return HttpResponse(b"slept", content_type="text/plain")


async def asleep(request):
    await asyncio.sleep(0.05)  # the same upstream call, awaited
    return HttpResponse(b"slept", content_type="text/plain")
