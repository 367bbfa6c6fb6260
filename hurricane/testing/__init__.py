"""Test harness for projects that run on Hurricane: real ``manage.py serve`` and
``consume`` processes started from a test, their output read line by line, and
HTTP clients for the app and probe ports.

The API is django-hurricane 1.6's (``hurricane.testing``), so that a project's test
suite written against it keeps running::

    from hurricane.testing import HurricanServerTest

    class MyTests(HurricanServerTest):
        @HurricanServerTest.cycle_server(args=["--static"])
        def test_static(self):
            response = self.app_client.get("/static/app.css")
            self.assertEqual(response.status, 200)
"""

from hurricane.testing.drivers import (
    BusyPortException,
    HurricaneAMQPDriver,
    HurricaneBaseDriver,
    HurricaneServerDriver,
    HurricaneWebhookServerDriver,
)
from hurricane.testing.testcases import (
    HurricanBaseTest,
    HurricaneAMQPTest,
    HurricaneWebhookServerTest,
    HurricanServerTest,
)

__all__ = [
    "BusyPortException",
    "HurricanBaseTest",
    "HurricanServerTest",
    "HurricaneAMQPDriver",
    "HurricaneAMQPTest",
    "HurricaneBaseDriver",
    "HurricaneServerDriver",
    "HurricaneWebhookServerDriver",
    "HurricaneWebhookServerTest",
]
