"""The asyncio event loop the app server runs on, and Tornado's IOLoop on top of it.

uvloop (libuv under asyncio's interface) costs the loop less per wake-up and per
ready socket than asyncio's own selector loop. A request that hands work to a
thread and back wakes the loop once or more: on the benchmark uvloop served 5% more
blocking-view and 7% more async-view requests, with 13-17% less CPU per request
(bench/results/loop.md). Tornado's HTTP server runs on either unchanged.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop
from tornado.platform.asyncio import AsyncIOMainLoop

LOOPS = ("auto", "uvloop", "asyncio")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


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


class LazyReaderIOLoop(AsyncIOMainLoop):
    """Tornado's IOLoop on the running asyncio loop, leaving a socket's reader
    registered while its stream pauses reading.

    Under load, the next request of a keep-alive connection often arrives before
    Tornado asks for it: the stream reads it into its buffer and stops listening for
    reads until the read for it begins, then listens again: a ``remove_reader`` and
    an ``add_reader`` per request, several ``epoll_ctl`` calls (and with uvloop a new
    poll handle), 13% of the event loop's CPU on /plain (py-spy). Here a reader that
    the stream stops wanting stays registered until it fires; most are wanted again
    before that and cost nothing. One that fires unwanted is removed then, and the
    stream is not called: the client's further bytes wait in the kernel, as they
    would with Tornado's own IOLoop.
    """

    def initialize(self, **kwargs: Any) -> None:
        super().initialize(**kwargs)
        self.unwanted_readers: set[int] = set()

    def update_handler(self, fd: Any, events: int) -> None:
        fd, _ = self.split_fd(fd)
        if events & IOLoop.READ:
            self.unwanted_readers.discard(fd)
        elif fd in self.readers:
            self.unwanted_readers.add(fd)
            events |= IOLoop.READ  # stays registered
        super().update_handler(fd, events)

    def remove_handler(self, fd: Any) -> None:
        self.unwanted_readers.discard(self.split_fd(fd)[0])
        super().remove_handler(fd)

    def _handle_events(self, fd: int, events: int) -> None:
        if events == IOLoop.READ and fd in self.unwanted_readers:
            self.unwanted_readers.discard(fd)
            self.readers.discard(fd)
            self.selector_loop.remove_reader(fd)
            return
        super()._handle_events(fd, events)


def install_tornado_ioloop() -> IOLoop:
    """Make :class:`LazyReaderIOLoop` the IOLoop of the running asyncio loop; call it
    on that loop before anything asks for ``IOLoop.current()``."""
    return LazyReaderIOLoop()
