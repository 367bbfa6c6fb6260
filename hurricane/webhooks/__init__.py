from hurricane.webhooks.base import Webhook, WebhookStatus
from hurricane.webhooks.registry import WebhookRegistry, registry
from hurricane.webhooks.webhook_types import LivenessWebhook, ReadinessWebhook, StartupWebhook

for _webhook in (StartupWebhook, LivenessWebhook, ReadinessWebhook):
    registry.register(_webhook)

__all__ = ["Webhook", "WebhookRegistry", "WebhookStatus", "registry"]
