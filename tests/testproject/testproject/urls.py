from django.urls import path

from testapp import views

urlpatterns = [
    path("things/<int:pk>/", views.thing),
    path("hello/", views.hello),
    path("slow/", views.slow),
    path("stream/", views.stream),
    path("file/", views.file),
    path("echo/", views.echo),
    path("error/", views.error),
    path("items/", views.items),
    path("meta/", views.meta),
    path("gate/", views.gate),
    path("stream-error/", views.stream_error),
]
