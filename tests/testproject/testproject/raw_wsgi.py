"""The test project behind a WSGI application that answers /raw-status/ with a status
line Django never writes ("OK", no code): what a hand-written WSGI application can
hand the server (tests/test_http.py, TEST_WSGI_APPLICATION)."""

from testproject.wsgi import application as django_application


def application(environ, start_response):
    if environ["PATH_INFO"] == "/raw-status/":
        start_response("OK", [("Content-Type", "text/plain")])
        return [b"never sent\n"]
    return django_application(environ, start_response)
