"""Django behind the HTTP server: the WSGI and ASGI paths, the worker pool, the
database connections' bounds and the static and media files."""
