from django.urls import path

from testapp import async_views, views

urlpatterns = [
    path("things/<int:pk>/", views.thing),
    path("hello/", views.hello),
    path("cookies/", views.cookies),
    path("slow/", views.slow),
    path("stream/", views.stream),
    path("file/", views.file),
    path("echo/", views.echo),
    path("upload/", views.upload),
    path("error/", views.error),
    path("hold/", views.hold),
    path("warn/", views.warn),
    path("bad-header/", views.bad_header),
    path("items/", views.items),
    path("meta/", views.meta),
    path("async-to-sync-thread/", views.async_to_sync_thread),
    path("gate/", views.gate),
    path("stream-error/", views.stream_error),
    path("db/", views.db),
    path("big/", views.big),
    path("big-stream/", views.big_stream),
]

# The ASGI path's tests (tests/test_asgi.py): async def views.
urlpatterns += [
    path("async/hello/", async_views.hello),
    path("async/meta/", async_views.meta),
    path("async/thread/", async_views.thread),
    path("async/sleep/", async_views.sleep),
    path("async/gate/", async_views.gate),
    path("async/error/", async_views.error),
    path("async/bad-header/", async_views.bad_header),
    path("async/echo/", async_views.echo),
    path("async/upload/", async_views.upload),
    path("async/stream/", async_views.stream),
    path("async/endless/", async_views.endless),
    path("async/sync-stream/", async_views.sync_stream),
    path("async/stream-error/", async_views.stream_error),
    path("async/big/", async_views.big),
    path("async/sync-thread/", async_views.sync_thread),
]
