from __future__ import annotations

from typing import TYPE_CHECKING

from hurricane.webhooks.exceptions import WebhookCodeAlreadyRegistered

if TYPE_CHECKING:  # hurricane.webhooks.base imports this module
    from hurricane.webhooks.base import Webhook


class WebhookRegistry:
    """Holds one instance per registered webhook class, keyed by its ``code``."""

    def __init__(self) -> None:
        self.webhooks: dict[str, Webhook] = {}

    def register(self, webhook_class: type[Webhook]) -> None:
        if webhook_class.code in self.webhooks:
            raise WebhookCodeAlreadyRegistered(
                f"Webhook Code ({webhook_class.code}) is already registered."
            )
        self.webhooks[webhook_class.code] = webhook_class()

    def unregister(self, webhook_class: type[Webhook]) -> None:
        """Forget the webhook of ``webhook_class``'s code; nothing if none is registered."""
        self.webhooks.pop(webhook_class.code, None)

    def get(self, code: str) -> Webhook:
        return self.webhooks[code]


registry = WebhookRegistry()
