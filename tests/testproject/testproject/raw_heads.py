"""Responses HTTP may or may not carry, each sent whole and streamed by a WSGI
application (raw_wsgi) and an ASGI one (asgi.raw_heads) at /raw-head/?case=NAME, with
``&stream=1`` for a streamed body (tests/test_response_heads.py). The body is BODY,
whatever the status."""

BODY = b"abc"

CASES = {
    "ok": ("200 OK", [("Content-Type", "text/plain")]),
    "no-reason": ("200", [("Content-Type", "text/plain")]),
    "bad-name": ("200 OK", [("Bad Name", "1")]),
    "crlf-in-value": ("200 OK", [("X-Note", "a\r\nX-Injected: 1")]),
    "control-in-value": ("200 OK", [("X-Note", "a\x01b")]),
    "beyond-latin-1": ("200 OK", [("X-Name", "Zo\u00eb \u2713")]),
    "crlf-in-reason": ("200 OK\r\nX-Injected: 1", []),
    "no-code": ("OK", []),
    "two-digit-code": ("99 Too Low", []),
    "length-matches": ("200 OK", [("content-length", "3")]),
    "length-mismatch": ("200 OK", [("Content-Length", "99")]),
    "length-not-a-number": ("200 OK", [("Content-Length", "abc")]),
    "length-twice": ("200 OK", [("Content-Length", "3"), ("Content-Length", "3")]),
    "204-with-body": ("204 No Content", []),
    "304-with-body": ("304 Not Modified", []),
    "transfer-encoding": ("200 OK", [("Transfer-Encoding", "chunked")]),
    "own-date": ("200 OK", [("Date", "Mon, 01 Jan 2024 00:00:00 GMT")]),
    "connection": ("200 OK", [("Connection", "keep-alive"), ("X-Other", "1")]),
    "not-a-string": ("200 OK", [("X-Number", 5)]),
    "not-a-pair": ("200 OK", [("X-Three", "a", "b")]),
}

# What an ASGI application cannot say: its status is a number, its headers bytes.
WSGI_ONLY = {
    "no-reason",
    "crlf-in-reason",
    "no-code",
    "beyond-latin-1",
    "not-a-string",
    "not-a-pair",
}


def case_of(query: str) -> tuple[str, list, bool]:
    """The status and headers a query names, and whether to stream the body."""
    fields = dict(part.partition("=")[::2] for part in query.split("&"))
    status, headers = CASES[fields["case"]]
    return status, headers, fields.get("stream") == "1"
