from hurricane.webhooks.base import Webhook


class StartupWebhook(Webhook):
    """Sent when start-up succeeded (the app port listens) or failed."""

    code = "startup"


class LivenessWebhook(Webhook):
    """Sent when the liveness state changes."""

    code = "liveness"


class ReadinessWebhook(Webhook):
    """Sent when the readiness state changes."""

    code = "readiness"
