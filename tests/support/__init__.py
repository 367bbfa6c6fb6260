"""Helpers shared by the tests and the soak script in ``bench/``."""
