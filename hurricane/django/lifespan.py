"""The ASGI lifespan protocol (``--lifespan auto|on|off``): ``lifespan.startup`` once
the application is loaded and before the process serves, ``lifespan.shutdown`` at the
end of a drain, each on the serving process's own event loop (so with
``--processes N``, once per serving process, as uvicorn's workers do).

``auto`` runs it when the application takes it: an application that raises at the
lifespan scope before answering (Django's own handler, a Channels router without a
``lifespan`` entry) does not, and serves on without it. ``on`` requires it: that
same failure fails the start. Either way a ``lifespan.startup.failed`` fails the
start, as a failed ``--command`` does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("hurricane.server.general")


class LifespanFailed(Exception):
    """The start-up could not complete; the message is one line for the log."""


class Lifespan:
    """One application's lifespan, run as a task beside the server."""

    def __init__(self, application: Any, mode: str) -> None:
        self.application = application
        self.mode = mode
        #: The application's lifespan state, copied into every connection's scope.
        self.state: dict[str, Any] = {}
        self.supported = False
        self.task: asyncio.Task | None = None
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future = loop.create_future()  # (ok, message)
        self.stopped: asyncio.Future = loop.create_future()

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer; raises LifespanFailed."""
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        self.task = asyncio.ensure_future(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        await asyncio.wait([self.started, self.task], return_when=asyncio.FIRST_COMPLETED)
        if self.started.done():
            ok, message = self.started.result()
            if not ok:
                raise LifespanFailed(f"lifespan.startup.failed: {message or 'no message'}")
            self.supported = True
            return
        error = self.task.exception()
        what = f"{type(error).__name__}: {error}" if error else "it returned"
        if self.mode == "on":
            raise LifespanFailed(
                f"the application does not take the ASGI lifespan protocol ({what}); "
                "--lifespan on requires it"
            )
        logger.info(
            "The ASGI application does not take the lifespan protocol (%s): serving without",
            what,
        )

    async def shutdown(self, timeout: float) -> None:
        """Send ``lifespan.shutdown`` and wait up to ``timeout`` for the answer."""
        task = self.task
        if not self.supported or task is None or task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        done, _ = await asyncio.wait(
            [self.stopped, task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            logger.warning("The ASGI lifespan shutdown did not end within %.1f s", timeout)
            task.cancel()
        elif self.stopped.done():
            ok, message = self.stopped.result()
            if not ok:
                logger.error("ASGI lifespan.shutdown.failed: %s", message or "no message")

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.application(scope, self.receive, self.send)
        except Exception:
            if self.started.done():  # failing after it took part is the app's error
                logger.exception("Error in the ASGI application's lifespan")
            raise

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        answers = {
            "lifespan.startup.complete": (self.started, True),
            "lifespan.startup.failed": (self.started, False),
            "lifespan.shutdown.complete": (self.stopped, True),
            "lifespan.shutdown.failed": (self.stopped, False),
        }
        if kind not in answers:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")
        future, ok = answers[kind]
        if not future.done():
            future.set_result((ok, message.get("message", "")))
