import json

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static
from django.views.decorators.csrf import csrf_exempt

from notes.models import Note


def index(request):
    return HttpResponse(
        "<!doctype html><title>Hurricane demo</title>"
        f'<link rel="stylesheet" href="{static("notes/style.css")}">'
        "<h1>Hurricane demo</h1><p>GET or POST <a href='/notes/'>/notes/</a>, "
        "or watch them arrive on <a href='/live/'>the live page</a>.</p>"
    )


def live(request):
    """The notes as they are saved, over a WebSocket (notes/live.py)."""
    return render(request, "notes/live.html", {"live": settings.DEMO_LIVE_PAGE})


def note_text(body: bytes) -> str:
    """The ``text`` of a posted note: an empty body is an empty note; anything but a
    JSON object whose ``text`` (if any) is a string is the client's error (400), not
    the server's (500)."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        raise ValueError('the body must be JSON, e.g. {"text": "hi"}') from None
    if not isinstance(data, dict) or not isinstance(data.get("text", ""), str):
        raise ValueError('the body must be a JSON object whose "text" is a string')
    return data.get("text", "")


@csrf_exempt
def notes(request):
    if request.method == "POST":
        try:
            text = note_text(request.body)
        except ValueError as error:
            return JsonResponse({"error": str(error)}, status=400)
        note = Note.objects.create(text=text[:200])
        return JsonResponse(note.as_dict(), status=201)
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET", "POST"])
    return JsonResponse({"notes": [note.as_dict() for note in Note.objects.order_by("-id")[:50]]})


def note_detail(request, pk):
    return JsonResponse(get_object_or_404(Note, pk=pk).as_dict())
