from django.contrib.auth import get_user_model, login
from django.http import HttpResponse
from django.urls import path

from testproject.urls import urlpatterns as base_urlpatterns


def login_as(request, name):
    """Logs in as the user ``name`` (made on first use): the session cookie that
    AuthMiddlewareStack reads on the WebSocket handshake."""
    user, _ = get_user_model().objects.get_or_create(username=name)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse(f"logged in as {name}\n")


urlpatterns = [*base_urlpatterns, path("login-as/<str:name>/", login_as)]
