"""Test cases that start a Hurricane process per test (``cycle_server``,
``cycle_consumer``) and give it HTTP clients: django-hurricane 1.6's API."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.test import SimpleTestCase

from hurricane.testing.actors import HTTPClient
from hurricane.testing.drivers import (
    HurricaneAMQPDriver,
    HurricaneServerDriver,
    HurricaneWebhookServerDriver,
)


class HurricanBaseTest(SimpleTestCase):
    """A test case with one driver (a class attribute, made an instance per class)."""

    driver: Any = None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.driver = cls.driver()

    @property
    def probe_client(self) -> HTTPClient:
        host, port = self.driver.get_server_host_port(probe_port=True)
        return HTTPClient(host, port)


def cycled(
    start: Callable[[Any, list[str] | None, bool, dict], None],
    stop: Callable[[Any], None],
    args: tuple,
    kwargs: dict,
) -> Callable:
    """A decorator (used bare or with ``args=``, ``coverage=``, ``env=``) that runs a
    test between ``start`` and ``stop`` of the test case's driver."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(self: Any) -> None:
            params = kwargs.get("args")
            start(
                self,
                list(params) if params is not None else None,
                kwargs.get("coverage", True),
                dict(kwargs.get("env", {})),
            )
            try:
                function(self)
            finally:
                stop(self)

        return wrapper

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


class HurricanServerTest(HurricanBaseTest):
    """Tests of ``manage.py serve``: ``@HurricanServerTest.cycle_server(args=[...])``
    starts a server for a test and stops it after."""

    # The driver's class; setUpClass makes it an instance (as in django-hurricane 1.6).
    driver: Any = HurricaneServerDriver

    @property
    def app_client(self) -> HTTPClient:
        host, port = self.driver.get_server_host_port()
        return HTTPClient(host, port)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.driver.stop_server()
        super().tearDownClass()

    @staticmethod
    def cycle_server(*args: Any, **kwargs: Any) -> Callable:
        return cycled(
            lambda self, params, coverage, env: self.driver.start_server(params, coverage, env),
            lambda self: self.driver.stop_server(),
            args,
            kwargs,
        )


class HurricaneWebhookServerTest(HurricanServerTest):
    """Tests with a webhook receiver on port 8074 (``cycle_server`` starts it)."""

    driver: Any = HurricaneWebhookServerDriver


class HurricaneAMQPTest(HurricanBaseTest):
    """Tests of ``manage.py consume``: ``@HurricaneAMQPTest.cycle_consumer(args=[...])``
    starts a broker and a consumer of it (``--amqp-host``/``--amqp-port`` added
    unless the arguments end with ``--no_host_port``)."""

    driver: Any = HurricaneAMQPDriver

    @classmethod
    def tearDownClass(cls) -> None:
        cls.driver.stop_consumer()
        cls.driver.stop_amqp()
        super().tearDownClass()

    @staticmethod
    def cycle_consumer(*args: Any, **kwargs: Any) -> Callable:
        def start(self: Any, params: list[str] | None, coverage: bool, env: dict) -> None:
            params = params or []
            self.driver.start_amqp()
            if params and params[-1] == "--no_host_port":
                params = params[:-1]
            else:
                host, port = self.driver.get_amqp_host_port()
                params += ["--amqp-port", str(port), "--amqp-host", host]
            self.driver.start_consumer(params, coverage, env)

        def stop(self: Any) -> None:
            self.driver.stop_consumer()
            self.driver.stop_amqp()

        return cycled(start, stop, args, kwargs)
