"""Request bodies: in memory while small, in a temporary file once large.

The app server reads a body whole before the application runs. Held in memory, a
few concurrent uploads near ``--max-body-size`` (100 MB by default) would take a pod
past its memory limit and the kernel would kill it, with every request in flight.
So a body larger than Django's ``FILE_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB unless set),
the size above which Django itself writes uploaded files to disk, goes to an unnamed
temporary file in ``FILE_UPLOAD_TEMP_DIR`` (or the system's, ``TMPDIR``/``/tmp``), which
the kernel frees when it is closed. The application reads it as ``wsgi.input`` or as
ASGI ``http.request`` messages, as it would read a body in memory.

The file is written and read on the event loop, as Django's own ASGI handler
writes its spooled bodies: writes of at most a socket read each land in the page
cache, and a hop to a thread per chunk would cost more than they take.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import BinaryIO

# The size of each ``http.request`` message an ASGI application gets of a spooled body.
ASGI_MESSAGE_SIZE = 256 * 1024

#: A body as the containers get it: bytes, or a temporary file at its start.
Body = bytes | BinaryIO


def spool(directory: str | None, chunks: list[bytes]) -> BinaryIO:
    """A new temporary file holding ``chunks``; OSError when it cannot be written."""
    file = tempfile.TemporaryFile(dir=directory)
    try:
        for chunk in chunks:
            file.write(chunk)
    except OSError:
        file.close()
        raise
    return file


def rewound(file: BinaryIO) -> BinaryIO:
    file.flush()
    file.seek(0)
    return file


def body_stream(body: Body) -> BinaryIO:
    """What ``wsgi.input`` reads."""
    return io.BytesIO(body) if isinstance(body, bytes) else body


def body_length(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else os.fstat(body.fileno()).st_size


def close_body(body: Body) -> None:
    """Free a spooled body's file (and its disk space) once the response is done."""
    if not isinstance(body, bytes):
        body.close()
