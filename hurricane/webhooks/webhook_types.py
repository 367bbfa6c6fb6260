from hurricane.webhooks.base import Webhook


class StartupWebhook(Webhook):
    """Sent when start-up succeeded (the app port listens), failed, or is held up by
    the database (``warning``)."""

    code = "startup"
    info = "Startup webhook"


class LivenessWebhook(Webhook):
    """Sent when the liveness state changes, and on the first liveness answer."""

    code = "liveness"
    info = "Liveness webhook"


class ReadinessWebhook(Webhook):
    """Sent when the readiness state changes (draining counts), and on the first
    readiness answer."""

    code = "readiness"
    info = "Readiness webhook"
