"""Webhooks: a JSON POST to ``--webhook-url`` when Hurricane's state changes.

Sending happens on a background thread with a timeout and a few retries, so a
receiver that is down or slow never blocks the event loop or a request.
"""

from __future__ import annotations

import concurrent.futures
import datetime
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

from hurricane.masking import url_origin

logger = logging.getLogger("hurricane.webhooks")

SIGNATURE_HEADER = "X-Hurricane-Signature"
TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5


class WebhookStatus(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WARNING = "warning"


class Webhook:
    """A kind of webhook; subclass it with a new ``code`` and register it."""

    code: str = ""

    def __init__(self, code: str | None = None) -> None:
        if code:
            self.code = code

    @classmethod
    def get_from_registry(cls) -> Webhook:
        from hurricane.webhooks.registry import registry

        return registry.get(cls.code)

    def get_info(self) -> dict[str, Any]:
        """Facts every webhook of this kind carries in ``info``; override to add yours."""
        return {}

    def build_payload(
        self, status: WebhookStatus, error_trace: str | None, info: dict[str, Any] | None
    ) -> dict[str, Any]:
        from django.conf import settings

        payload: dict[str, Any] = {
            "type": self.code,
            "status": status.value,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "podname": socket.gethostname(),
            "version": getattr(settings, "HURRICANE_VERSION", None),
            "info": {**self.get_info(), **(info or {})},
        }
        if error_trace:
            payload["traceback"] = error_trace
        return payload

    def run(
        self,
        url: str,
        status: WebhookStatus,
        error_trace: str | None = None,
        close_loop: bool = False,
        loop: Any = None,
        info: dict[str, Any] | None = None,
        secret: str | None = None,
    ) -> concurrent.futures.Future:
        """Queue the webhook for sending and return at once.

        The returned future becomes True once a receiver accepted it (2xx), False
        after the last failed attempt. ``close_loop`` and ``loop`` are accepted for
        compatibility with the original library: sending never touches an event loop.
        With ``secret``, the body is signed (:data:`SIGNATURE_HEADER`).
        """
        body = json.dumps(self.build_payload(status, error_trace, info)).encode()
        return sender.send(url, body, self.code, secret)


class WebhookSender:
    """One daemon thread sends every webhook in order, so a receiver sees state
    changes in the order they happened; a receiver that is down or slow delays only
    other webhooks, never serving."""

    def __init__(self, max_queued: int = 100) -> None:
        self.queue: queue.Queue = queue.Queue(max_queued)
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

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
            logger.warning("Webhook %s dropped: %d webhooks wait already", code, self.queue.maxsize)
            future.set_result(False)
        return future

    def _work(self) -> None:
        while True:
            url, body, code, secret, future = self.queue.get()
            try:
                future.set_result(deliver(url, body, code, secret))
            except Exception as error:  # never let the sender thread die
                logger.exception("Webhook %s could not be sent", code)
                future.set_exception(error)


def signature(secret: str, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER`: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(url: str, body: bytes, code: str, secret: str | None) -> bool:
    import requests

    headers = {"Content-Type": "application/json", "User-Agent": "hurricane-webhooks"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    problem = ""
    for attempt in range(ATTEMPTS):
        try:
            response = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
            if 200 <= response.status_code < 300:
                logger.info("Webhook %s sent to %s", code, url_origin(url))
                return True
            problem = f"answered {response.status_code}"
        except requests.RequestException as error:
            problem = f"failed ({error.__class__.__name__})"
        if attempt + 1 < ATTEMPTS:
            time.sleep(BACKOFF_SECONDS * 2**attempt)
    logger.warning(
        "Webhook %s to %s %s after %d attempts", code, url_origin(url), problem, ATTEMPTS
    )
    return False


sender = WebhookSender()
