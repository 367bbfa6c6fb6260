class MetricIdAlreadyRegistered(Exception):
    """A metric with the same ``code`` is already in the registry."""
