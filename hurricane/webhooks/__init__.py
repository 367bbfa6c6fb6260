from hurricane.webhooks.base import Webhook, WebhookStatus
from hurricane.webhooks.registry import WebhookRegistry, registry
from hurricane.webhooks.webhook_types import LivenessWebhook, ReadinessWebhook, StartupWebhook

for _webhook in (StartupWebhook, LivenessWebhook, ReadinessWebhook):
    registry.register(_webhook)

# django-hurricane 1.6's name for the registry.
webhook_registry = registry

__all__ = ["Webhook", "WebhookRegistry", "WebhookStatus", "registry", "webhook_registry"]
