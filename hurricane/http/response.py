"""What goes on the wire ahead of a response's body, decided in one place.

:func:`response_head` checks a status and a header list (the application's, or an
answer of the server's own) and turns them into the bytes of the status line and
headers, in one pass: whole responses and streamed ones, from WSGI and ASGI, and the
server's own error answers (:func:`error_response`) all go through it, so the rules
below hold the same for each of them.

- A status is three digits, the first not 0, then a space and a reason phrase (or
  nothing). A header name is a token; a value is a string with no control character
  but the horizontal tab, and none beyond Latin-1 (PEP 3333). Anything else is an
  :class:`InvalidResponse`, which the server answers with a 500.
- The server frames the body. An application's ``Transfer-Encoding`` is dropped (a
  hop-by-hop header: the server chunks a streamed body itself). One ``Content-Length``
  is kept, a number; a whole response's must be the length of its body (but for
  HEAD, 1xx, 204 and 304); one given twice, or not a number, is invalid. A whole
  response without one gets it; a streamed one without one is chunked (or, for an
  HTTP/1.0 client, ends when the connection closes).
- 1xx, 204 and 304 responses, and any response to HEAD, carry no body, not even the
  bytes an application gave them.
- ``Date`` is added when missing; ``Connection: close`` when the connection closes
  after the response (HTTP/1.1), ``Connection: Keep-Alive`` when an HTTP/1.0 client
  asked to keep it, each in place of the application's own ``Connection``.

About half of the event loop's time per request went to writing the response
(py-spy): building Tornado's HTTPHeaders, then its lines, checking them again. Here
the lines are joined once, checked in one pass, and written whole: 6% fewer
instructions per /plain request (callgrind, bench/results/profile-plain.md).
"""

from __future__ import annotations

import functools
import http
import re
import time
from typing import Any, NamedTuple

from tornado import httputil

# What the header lines of a response may hold (RFC 9110): a field name is a token, and
# a value has no control characters but the horizontal tab. Values go on the wire in
# Latin-1 (PEP 3333), so a character beyond it cannot be sent either.
FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_BESIDES_CR_LF = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0100-\U0010ffff"
FORBIDDEN_IN_FIELD_VALUE = re.compile(rf"[{_FORBIDDEN_BESIDES_CR_LF}\r\n]")
# The same for the status and header lines of a response joined into one text: each
# line ends in CR LF, and CR and LF are counted instead.
FORBIDDEN_IN_RESPONSE_HEAD = re.compile(rf"[{_FORBIDDEN_BESIDES_CR_LF}]")
CONTENT_LENGTH_LINE = re.compile(r"\ncontent-length:[ \t]*([0-9]+)[ \t]*\r", re.IGNORECASE)
# Field names already found valid: an application sends the same few again and again.
# Bounded, in case one makes up names.
_valid_field_names: set[str] = set()
VALID_FIELD_NAMES_KEPT = 1024
# Header names the server decides itself, dropped from an application's response.
_FRAMING = ("transfer-encoding",)
_FRAMING_AND_CONNECTION = ("transfer-encoding", "connection")


class InvalidResponse(ValueError):
    """The status or headers cannot be sent as HTTP."""


_new_tuple = tuple.__new__


class Head(NamedTuple):
    """A checked response head and how the body after it is framed."""

    code: int
    #: The status line and header lines, and the blank line that ends them.
    data: bytes
    #: Whether a body follows (not after HEAD, nor for 1xx, 204 or 304).
    body: bool
    #: A streamed body is sent in chunks (Transfer-Encoding: chunked).
    chunked: bool
    #: The body bytes the head announces, None when chunked or ended by the close.
    length: int | None
    #: The connection must close after the response (an HTTP/1.0 client's streamed
    #: body of unknown length ends there).
    close: bool


def without_body(status: int) -> bool:
    """1xx, 204 and 304 responses have no body, not even an empty one (RFC 9110)."""
    return status in (204, 304) or 100 <= status < 200


_date_cache: list = [0, ""]


def http_date_now() -> str:
    """The Date header HTTP/1.1 requires, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, httputil.format_timestamp(now)
    return _date_cache[1]


@functools.lru_cache(maxsize=256)
def status_line(code: int) -> str:
    """``200 OK``: a status as WSGI's start_response takes it."""
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def response_head(
    status: str,
    header_list: list[tuple[str, str]],
    body_length: int | None,
    method: str,
    version: str = "HTTP/1.1",
    closing: bool = False,
    keep_alive: bool = False,
) -> Head:
    """The checked head of a response to a ``method`` request of HTTP ``version``:
    whole, with a body of ``body_length`` bytes, or streamed (``body_length`` None).
    ``closing``: the connection closes after it; ``keep_alive``: an HTTP/1.0 client
    asked to keep it open. Raises :class:`InvalidResponse` saying what HTTP cannot
    carry."""
    try:
        lines = ["HTTP/1.1 ", status, "\r\n"]
        for name, value in header_list:
            if name not in _valid_field_names:
                if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
                    raise InvalidResponse(_first_problem(status, header_list))
                if len(_valid_field_names) < VALID_FIELD_NAMES_KEPT:
                    _valid_field_names.add(name)
            lines.append(name)
            lines.append(": ")
            lines.append(value)
            lines.append("\r\n")
        text = "".join(lines)
    except (TypeError, ValueError) as error:  # not strings, not pairs
        if isinstance(error, InvalidResponse):
            raise
        raise InvalidResponse(_first_problem(status, header_list)) from None
    count = (len(lines) + 1) // 4  # the status line and each header line
    code = status[:3]
    if (
        text.count("\n") != count
        or text.count("\r") != count
        or FORBIDDEN_IN_RESPONSE_HEAD.search(text)
        or not (len(code) == 3 and code.isdigit() and code.isascii() and code[0] != "0")
        or status[3:4] not in (" ", "")
    ):
        raise InvalidResponse(_first_problem(status, header_list))
    names = text.lower()
    status_code = int(code)
    bodyless = status_code in (204, 304) or status_code < 200  # without_body()
    body = not bodyless and method != "HEAD"
    close = False
    if body_length is None and body and version != "HTTP/1.1" and "\ncontent-length:" not in names:
        # HTTP/1.0 has no chunks: a streamed body of unknown length ends when the
        # connection closes.
        close = closing = True
        keep_alive = False
    if "\ntransfer-encoding:" in names or ((closing or keep_alive) and "\nconnection:" in names):
        # Rare: the server decides these itself.
        framing = _FRAMING_AND_CONNECTION if closing or keep_alive else _FRAMING
        kept = [(name, value) for name, value in header_list if name.lower() not in framing]
        return response_head(status, kept, body_length, method, version, closing, keep_alive)
    chunked = False
    length: int | None = 0
    if len(status) == 3:  # no reason phrase: the status line still has its space
        text = text.replace("\r\n", " \r\n", 1)
    if "\ncontent-length:" in names:
        given = CONTENT_LENGTH_LINE.search(text)
        if given is None or names.count("\ncontent-length:") != 1:
            _content_length(header_list, names, None)  # raises, saying why
        elif body:
            length = int(given.group(1))
            if body_length is not None and length != body_length:
                _content_length(header_list, names, body_length)
    elif body_length is not None:
        if not bodyless:
            text += f"Content-Length: {body_length}\r\n"
            length = body_length if body else 0
    elif body:  # streamed, of unknown length
        length = None
        if not close:
            chunked = True
            text += "Transfer-Encoding: chunked\r\n"
    if "\ndate:" not in names:
        text += "Date: " + http_date_now() + "\r\n"
    if closing and version == "HTTP/1.1":
        text += "Connection: close\r\n"
    elif keep_alive and not closing:
        text += "Connection: Keep-Alive\r\n"
    # As Head(...), without the call of its __new__ (a tenth of this function's time).
    data = (text + "\r\n").encode("latin-1")
    return _new_tuple(Head, (status_code, data, body, chunked, length, close))


def _content_length(
    header_list: list[tuple[str, str]], names: str, body_length: int | None
) -> None:
    """Raise what is wrong with a response's Content-Length: given more than once, not
    a number, or not the length of the whole body (``body_length``, None when unknown
    or not sent)."""
    values = ",".join(value for name, value in header_list if name.lower() == "content-length")
    if names.count("\ncontent-length:") > 1:
        raise InvalidResponse(f"Content-Length given more than once: {values!r}")
    if body_length is None:
        raise InvalidResponse(f"invalid Content-Length {values!r}")
    raise InvalidResponse(f"Content-Length {values!r} is not the length of the body, {body_length}")


def _first_problem(status: Any, header_list: list[Any]) -> str:
    """What makes a head invalid, for the log: the status or the first bad header."""
    if not isinstance(status, str):
        return f"invalid status {status!r}"
    code, _, reason = status.partition(" ")
    if (
        len(code) != 3
        or not (code.isdigit() and code.isascii())
        or code[0] == "0"
        or FORBIDDEN_IN_FIELD_VALUE.search(reason)
    ):
        return f"invalid status {status!r}"
    try:
        fields = list(header_list)
    except TypeError:
        return f"invalid header list {header_list!r}"
    for field in fields:
        try:
            name, value = field
        except (TypeError, ValueError):
            return f"invalid header {field!r}"
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            return f"invalid header name {name!r}"
        if not isinstance(value, str) or FORBIDDEN_IN_FIELD_VALUE.search(value):
            return f"invalid value of header {name}: {value!r}"
    return "invalid response head"


#: The headers of every answer the server gives itself (an error, a refusal).
ERROR_HEADERS = (("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"))


def error_response(
    code: int, message: str | None = None, extra_headers: tuple[tuple[str, str], ...] = ()
) -> tuple[str, list[tuple[str, str]], bytes]:
    """The status, headers and body of an answer the server gives itself: ``message``
    (the reason phrase unless given) as one line of plain text, never cached."""
    status = status_line(code)
    if message is None:
        message = status.partition(" ")[2]
    return status, [*ERROR_HEADERS, *extra_headers], message.encode("utf-8") + b"\n"


def closing_error_response(
    code: int,
    message: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
    method: str = "GET",
) -> bytes:
    """The bytes of an answer the server gives itself before closing the connection,
    for a connection taken from Tornado (refused bodies, a header block too large)."""
    status, header_list, body = error_response(code, message, extra_headers)
    head = response_head(status, header_list, len(body), method, closing=True)
    return head.data + body if head.body else head.data
