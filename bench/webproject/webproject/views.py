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


def sleep(request):
    time.sleep(0.05)  # a slow upstream call, blocking
    return HttpResponse(b"slept", content_type="text/plain")


async def asleep(request):
    await asyncio.sleep(0.05)  # the same upstream call, awaited
    return HttpResponse(b"slept", content_type="text/plain")
