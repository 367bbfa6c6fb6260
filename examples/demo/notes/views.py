import json

from django.http import HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404
from django.templatetags.static import static
from django.views.decorators.csrf import csrf_exempt

from notes.models import Note


def index(request):
    return HttpResponse(
        "<!doctype html><title>Hurricane demo</title>"
        f'<link rel="stylesheet" href="{static("notes/style.css")}">'
        "<h1>Hurricane demo</h1><p>GET or POST <a href='/notes/'>/notes/</a>.</p>"
    )


@csrf_exempt
def notes(request):
    if request.method == "POST":
        text = json.loads(request.body or b"{}").get("text", "") if request.body else ""
        note = Note.objects.create(text=text[:200])
        return JsonResponse(note.as_dict(), status=201)
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET", "POST"])
    return JsonResponse({"notes": [note.as_dict() for note in Note.objects.order_by("-id")[:50]]})


def note_detail(request, pk):
    return JsonResponse(get_object_or_404(Note, pk=pk).as_dict())
