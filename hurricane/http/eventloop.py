"""The asyncio event loop the app server runs on, and Tornado's IOLoop on top of it.

uvloop (libuv under asyncio's interface) costs the loop less per wake-up and per
ready socket than asyncio's own selector loop. A request that hands work to a
thread and back wakes the loop once or more: on the benchmark uvloop served 5% more
blocking-view and 7% more async-view requests, with 13-17% less CPU per request
(bench/results/loop.md). Tornado's HTTP server runs on either unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tornado.ioloop import IOLoop

from hurricane.config.options import uvloop_installed
from hurricane.http.tornado_compat import LazyReaderIOLoop


def loop_kind(name: str) -> str:
    """``uvloop`` or ``asyncio``: the loop ``--loop NAME`` runs on here (``auto``:
    uvloop where it is installed)."""
    if name == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    return name


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop of the kind ``loop_kind(name)`` says."""
    if loop_kind(name) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def install_tornado_ioloop() -> IOLoop:
    """Make a LazyReaderIOLoop (hurricane.http.tornado_compat) the IOLoop of the
    running asyncio loop; call it on that loop before anything asks for
    ``IOLoop.current()``."""
    return LazyReaderIOLoop()
