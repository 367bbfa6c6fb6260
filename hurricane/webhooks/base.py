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
import os
import socket
import threading
import time
from typing import Any

logger = logging.getLogger("hurricane.webhooks")

SIGNATURE_HEADER = "X-Hurricane-Signature"
TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3


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
        self.data: dict[str, Any] = {}

    @classmethod
    def get_from_registry(cls) -> Webhook:
        from hurricane.webhooks.registry import registry

        return registry.get(cls.code)

    def get_info(self) -> dict[str, Any]:
        """Extra facts sent in the ``info`` field; override to add your own."""
        return {}

    def build_payload(self, status: WebhookStatus, error_trace: str | None) -> dict[str, Any]:
        from django.conf import settings

        payload: dict[str, Any] = {
            "type": self.code,
            "status": status.value,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "podname": socket.gethostname(),
            "version": getattr(settings, "HURRICANE_VERSION", None),
            "info": self.get_info(),
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
    ) -> concurrent.futures.Future:
        """Send the webhook in the background; the returned future says whether it was
        delivered (``close_loop`` and ``loop`` are accepted for compatibility: sending
        never touches the event loop)."""
        body = json.dumps(self.build_payload(status, error_trace)).encode()
        future: concurrent.futures.Future = concurrent.futures.Future()
        threading.Thread(
            target=_deliver,
            args=(url, body, self.code, future),
            name="hurricane-webhook",
            daemon=True,
        ).start()
        return future


def _deliver(url: str, body: bytes, code: str, future: concurrent.futures.Future) -> None:
    import requests

    headers = {"Content-Type": "application/json"}
    secret = os.environ.get("HURRICANE_WEBHOOK_SECRET")
    if secret:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers[SIGNATURE_HEADER] = f"sha256={digest}"
    problem = ""
    for attempt in range(ATTEMPTS):
        try:
            response = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
            if 200 <= response.status_code < 300:
                logger.info("Webhook %s sent to %s", code, url)
                future.set_result(True)
                return
            problem = f"answered {response.status_code}"
        except requests.RequestException as error:
            problem = f"failed: {error.__class__.__name__}"
        if attempt + 1 < ATTEMPTS:
            time.sleep(0.5 * 2**attempt)
    logger.warning("Webhook %s to %s %s after %d attempts", code, url, problem, ATTEMPTS)
    future.set_result(False)
