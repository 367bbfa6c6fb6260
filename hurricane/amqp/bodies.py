"""Message bodies above ``--max-message-size`` are never held in memory.

pika gathers a message's body frames in a list and joins them once the last one has
come, so a body is in memory twice over before the consumer first sees it. RabbitMQ
does not implement a prefetch size (``basic.qos`` with ``prefetch_size`` closes the
connection with 540 NOT_IMPLEMENTED), and its own ``max_message_size`` lets bodies up
to 128 MiB through by default. So the channel's frame assembler is replaced with one
that reads the body size from the content header, before any of the body: a body over
the limit is counted off frame by frame (each at most ``frame_max``, 128 KiB by
default) and dropped, and the consumer gets an :class:`UnreadBody` to reject.
"""

from __future__ import annotations

from typing import Any

from pika import frame
from pika.channel import ContentFrameAssembler

from hurricane.amqp import logger


class UnreadBody(bytes):
    """Stands in (empty) for a body that was too large to read; ``size`` is its size."""

    size: int

    def __new__(cls, size: int) -> UnreadBody:
        body = super().__new__(cls, b"")
        body.size = size
        return body


def body_size(body: bytes) -> int:
    """The size of the body the broker sent, read or not."""
    return body.size if isinstance(body, UnreadBody) else len(body)


class SizeLimitedAssembler(ContentFrameAssembler):
    """pika's assembler, but a body over ``limit`` bytes is counted, not kept."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._unread_header: Any = None
        self._unread_left = 0

    def process(self, frame_value: Any) -> Any:
        if self._unread_header is not None:
            # A body's frames follow its header with nothing between (AMQP 0-9-1).
            self._unread_left -= len(frame_value.fragment)
            if self._unread_left > 0:
                return None
            method, header = self._method_frame, self._unread_header
            self._unread_header = None
            self._reset()
            return method, header, UnreadBody(header.body_size)
        if isinstance(frame_value, frame.Header) and frame_value.body_size > self._limit:
            self._unread_header = frame_value
            self._unread_left = frame_value.body_size
            return None
        return super().process(frame_value)


def limit_body_size(channel: Any, limit: int) -> None:
    """Give a freshly opened pika channel the size-limited assembler. If pika's
    internals ever change, the consumer still rejects oversized bodies, only after
    reading them: say so."""
    if isinstance(getattr(channel, "_content_assembler", None), ContentFrameAssembler):
        channel._content_assembler = SizeLimitedAssembler(limit)
    else:
        logger.warning(
            "This pika version has no frame assembler to replace: bodies over "
            "--max-message-size are rejected after they have been read into memory"
        )
