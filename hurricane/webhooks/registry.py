from __future__ import annotations

from hurricane.webhooks.exceptions import WebhookCodeAlreadyRegistered


class WebhookRegistry:
    """Holds one instance per registered webhook class, keyed by its ``code``."""

    def __init__(self) -> None:
        self.webhooks: dict[str, object] = {}

    def register(self, webhook_class: type) -> None:
        if webhook_class.code in self.webhooks:
            raise WebhookCodeAlreadyRegistered(
                f"Webhook Code ({webhook_class.code}) is already registered."
            )
        self.webhooks[webhook_class.code] = webhook_class()

    def unregister(self, webhook_class: type) -> None:
        """Forget the webhook of ``webhook_class``'s code; nothing if none is registered."""
        self.webhooks.pop(webhook_class.code, None)

    def get(self, code: str) -> object:
        return self.webhooks[code]


registry = WebhookRegistry()
