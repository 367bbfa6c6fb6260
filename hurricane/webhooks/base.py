"""Webhooks: a JSON POST to ``--webhook-url`` when Hurricane's state changes.

Sending happens on a background thread with a timeout and a few retries, so a
receiver that is down or slow never blocks the event loop or a request.

With a secret, each attempt is signed twice: :data:`TIMED_SIGNATURE_HEADER` covers
the time of sending with the body, so a receiver can refuse a replayed webhook;
:data:`SIGNATURE_HEADER` covers the body alone, for receivers written before the
timed one existed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import hashlib
import hmac
import json
import logging
import queue
import socket
import threading
import time
from typing import Any

from hurricane.config.masking import shown_url

logger = logging.getLogger("hurricane.webhooks")

SIGNATURE_HEADER = "X-Hurricane-Signature"
TIMED_SIGNATURE_HEADER = "X-Hurricane-Timed-Signature"
TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5


class WebhookStatus(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WARNING = "warning"


class Webhook:
    """A kind of webhook; subclass it with a new ``code`` and register it.

    The payload is django-hurricane 1.6's: ``type``, ``info`` (a short description of
    the kind), ``status``, ``timestamp`` (Unix seconds), ``podname``, ``version`` and,
    after a failure, ``traceback``; Hurricane adds ``details``, a dict of what it knows
    about this change. A subclass may set ``data`` (a dict) in ``__init__``, as 1.6's
    own types did: its keys go into every payload of the kind."""

    code: str = ""
    #: The payload's ``info``; the default is "<code> webhook".
    info: str = ""

    def __init__(self, code: str | None = None) -> None:
        if code:
            self.code = code

    @classmethod
    def get_from_registry(cls) -> Webhook:
        from hurricane.webhooks.registry import registry

        return registry.get(cls.code)

    def get_info(self) -> dict[str, Any]:
        """Facts every webhook of this kind carries in ``details``; override to add yours."""
        return {}

    def build_payload(
        self, status: WebhookStatus, error_trace: str | None, details: dict[str, Any] | None
    ) -> dict[str, Any]:
        from django.conf import settings

        payload: dict[str, Any] = {
            "type": self.code,
            "info": self.info or f"{self.code} webhook",
            **(getattr(self, "data", None) or {}),
            "status": status.value,
            "timestamp": int(time.time()),
            "podname": socket.gethostname(),
            "version": getattr(settings, "HURRICANE_VERSION", None),
            "details": {**self.get_info(), **(details or {})},
        }
        if error_trace:
            payload["traceback"] = error_trace
        return payload

    def run(
        self,
        url: str | None,
        status: WebhookStatus,
        error_trace: str | None = None,
        close_loop: bool = False,
        loop: Any = None,
        details: dict[str, Any] | None = None,
        secret: str | None = None,
    ) -> concurrent.futures.Future:
        """Queue the webhook for sending and return at once.

        The returned future becomes True once a receiver accepted it (2xx), False
        after the last failed attempt, or at once without ``url`` (nothing is sent).
        ``close_loop`` and ``loop`` are accepted for compatibility with
        django-hurricane 1.6: sending never touches an event loop. With ``secret``,
        each attempt is signed (:data:`TIMED_SIGNATURE_HEADER`, :data:`SIGNATURE_HEADER`).
        """
        if not url:
            unsent: concurrent.futures.Future = concurrent.futures.Future()
            unsent.set_result(False)
            return unsent
        body = json.dumps(self.build_payload(status, error_trace, details)).encode()
        return sender.send(url, body, self.code, secret)


class WebhookSender:
    """One daemon thread sends every webhook in order, so a receiver sees state
    changes in the order they happened; a receiver that is down or slow delays only
    other webhooks, never serving.

    When ``max_queued`` webhooks wait, more are dropped. A flapping probe can drop
    hundreds in a row, so drops are counted, and the count is logged in one line once
    the queue has room again (the burst is over)."""

    def __init__(self, max_queued: int = 100) -> None:
        self.queue: queue.Queue = queue.Queue(max_queued)
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.dropped: collections.Counter[str] = collections.Counter()  # per code

    def send(
        self, url: str, body: bytes, code: str, secret: str | None
    ) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._work, name="hurricane-webhooks", daemon=True
                )
                self.thread.start()
        try:
            self.queue.put_nowait((url, body, code, secret, future))
        except queue.Full:
            with self.lock:
                self.dropped[code] += 1
            future.set_result(False)
        return future

    def _report_drops(self) -> None:
        """Log the drops of the burst that just ended, if any: one line, with counts."""
        with self.lock:
            dropped, self.dropped = self.dropped, collections.Counter()
        if dropped:
            logger.warning(
                "Dropped %d webhooks (%s) while %d waited for the receiver",
                dropped.total(),
                ", ".join(f"{code}: {count}" for code, count in sorted(dropped.items())),
                self.queue.maxsize,
            )

    def _work(self) -> None:
        while True:
            url, body, code, secret, future = self.queue.get()
            self._report_drops()  # the queue has room again: a burst of drops ended
            try:
                future.set_result(deliver(url, body, code, secret))
            except Exception as error:  # never let the sender thread die
                logger.exception("Webhook %s could not be sent", code)
                future.set_exception(error)


def hmac_sha256(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER`: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac_sha256(secret, body)


def timed_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The value of :data:`TIMED_SIGNATURE_HEADER`: ``t=<unix seconds>,v1=<hex HMAC of
    "<unix seconds>." and the body>``."""
    return f"t={timestamp},v1=" + hmac_sha256(secret, f"{timestamp}.".encode() + body)


def receiver_shown(url: str) -> str:
    """The receiver as the log names it: its origin and the public words of its path
    (chat services keep their credential in the path), nothing when the URL was read
    from a file."""
    return shown_url("HURRICANE_WEBHOOK_URL", url)


def deliver(url: str, body: bytes, code: str, secret: str | None) -> bool:
    import requests

    headers = {"Content-Type": "application/json", "User-Agent": "hurricane-webhooks"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    shown = receiver_shown(url)
    problem = ""
    for attempt in range(ATTEMPTS):
        if secret:
            # The time of this attempt, not of the state change: a webhook that waited
            # behind a slow receiver still falls within the receiver's tolerance.
            headers[TIMED_SIGNATURE_HEADER] = timed_signature(secret, body, int(time.time()))
        try:
            response = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
            if 200 <= response.status_code < 300:
                logger.info("Webhook %s sent to %s", code, shown)
                return True
            problem = f"answer {response.status_code}"
        except requests.RequestException as error:
            problem = error.__class__.__name__
        if attempt + 1 < ATTEMPTS:
            # Said at once, in django-hurricane 1.6's words (1.6 tried once and said so
            # at once): a receiver that is down is seen now, not after the retries.
            pause = BACKOFF_SECONDS * 2**attempt
            logger.info(
                "Sending webhook to %s has failed due to %s (%s webhook, attempt %d of %d);"
                " trying again in %.1f s",
                shown,
                problem,
                code,
                attempt + 1,
                ATTEMPTS,
                pause,
            )
            time.sleep(pause)
    # The same words, with the receiver's URL as public_url shows it: given up.
    logger.warning(
        "Sending webhook to %s has failed due to %s (%s webhook, %d attempts)",
        shown,
        problem,
        code,
        ATTEMPTS,
    )
    return False


sender = WebhookSender()
