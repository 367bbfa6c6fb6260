"""Answers given before a request's body is read, and the connection closed after them:
a body larger than ``--max-body-size``, or any body sent where none is taken (see
:mod:`hurricane.http.handlers`)."""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import httputil
from tornado.iostream import StreamClosedError

# A refused body is still read and thrown away, up to this many bytes, before the
# connection closes: closing with unread data makes the kernel reset the connection,
# and the client would never see the answer. Larger ones are not waited for.
DISCARD_LIMIT = 8 * 1024 * 1024
DISCARD_TIMEOUT = 5.0
# Read this much at a time while discarding: memory stays flat whatever the size.
DISCARD_CHUNK = 65536


def announced_length(headers: httputil.HTTPHeaders) -> int | None:
    """The body length a request announces: its Content-Length, None for a chunked
    body (length unknown), 0 without a body. Tornado has already refused requests
    whose framing headers are malformed or contradict each other."""
    if "Transfer-Encoding" in headers:
        return None
    length = headers.get("Content-Length")
    if length is None:
        return 0
    length = length.strip()
    return int(length) if length.isdigit() else None


def refuse_and_close(request_conn: Any, headers: httputil.HTTPHeaders, response: bytes) -> None:
    """Send ``response`` (built by
    :func:`~hurricane.http.response.closing_error_response`) and close, without
    reading the body into memory. May only be called from ``headers_received``: the
    connection is taken over from Tornado, which would otherwise read the body first."""
    stream = request_conn.detach()
    discard = 0
    # A client that asked to be told first (Expect: 100-continue) sends nothing more.
    if headers.get("Expect", "").lower() != "100-continue":
        length = announced_length(headers)
        discard = length if length is not None and length <= DISCARD_LIMIT else 0
    stream.io_loop.add_future(
        asyncio.ensure_future(_answer_and_discard(stream, response, discard)),
        lambda future: future.exception(),
    )


async def _answer_and_discard(stream: Any, response: bytes, discard: int) -> None:
    try:
        await stream.write(response)
        if discard:
            await asyncio.wait_for(_read_up_to(stream, discard), DISCARD_TIMEOUT)
    except (StreamClosedError, asyncio.TimeoutError):
        pass
    finally:
        stream.close()


async def _read_up_to(stream: Any, size: int) -> None:
    remaining = size
    while remaining > 0:
        data = await stream.read_bytes(min(remaining, DISCARD_CHUNK), partial=True)
        remaining -= len(data)
