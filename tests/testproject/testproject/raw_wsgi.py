"""The test project behind a WSGI application that answers a few paths with what
Django never writes, but a hand-written WSGI application can hand the server
(tests/test_http.py, TEST_WSGI_APPLICATION):

- /raw-status/: a status line without a code ("OK");
- /raw-headers/?case=lower: header names in lower case, its own Content-Length and Date;
- /raw-headers/?case=length: a Content-Length the body does not match;
- /raw-headers/?case=latin-1: a header value with a character beyond Latin-1;
- /raw-headers/?case=crlf: a line break in a header value (Django refuses to set one);
- /raw-head/?case=NAME[&stream=1]: a response of raw_heads.CASES, whole or streamed.
"""

from testproject.raw_heads import BODY, case_of
from testproject.wsgi import application as django_application

RAW_HEADERS = {
    "lower": [
        ("content-type", "text/plain"),
        ("content-length", "4"),
        ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("x-name", "Zo\u00eb"),
    ],
    "length": [("Content-Type", "text/plain"), ("Content-Length", "99")],
    "latin-1": [("Content-Type", "text/plain"), ("X-Name", "Zo\u00eb \u2713")],
    "crlf": [("Content-Type", "text/plain"), ("X-Note", "a\r\nX-Injected: 1")],
}


def application(environ, start_response):
    if environ["PATH_INFO"] == "/raw-status/":
        start_response("OK", [("Content-Type", "text/plain")])
        return [b"never sent\n"]
    if environ["PATH_INFO"] == "/raw-headers/":
        case = environ["QUERY_STRING"].partition("case=")[2]
        start_response("200 OK", RAW_HEADERS[case])
        return [b"raw\n"]
    if environ["PATH_INFO"] == "/raw-head/":
        status, headers, stream = case_of(environ["QUERY_STRING"])
        start_response(status, headers)
        if stream:  # a generator: the server streams it, chunk by chunk
            return (chunk for chunk in (BODY[:1], BODY[1:]))
        return [BODY]
    return django_application(environ, start_response)
