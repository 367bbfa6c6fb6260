class WebhookCodeAlreadyRegistered(Exception):
    """A webhook with the same ``code`` is already in the registry."""
