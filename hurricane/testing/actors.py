"""What a test talks to a Hurricane process with: an HTTP client, an AMQP publisher,
and a receiver of webhooks."""

from __future__ import annotations

import http.client
import json
import logging
import mimetypes
import os
import uuid
from typing import Any

import tornado.web

logger = logging.getLogger("hurricane.testing")


class HTTPClient:
    """A keep-alive HTTP/1.1 client of one server; each method returns a
    :class:`Response` with ``status`` and ``text``."""

    class Response(dict):
        """``status`` and ``text``, as keys and as attributes."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.__dict__ = self

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host=host, port=port, timeout=30)

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> Response:
        self.conn.request(method, path, body, headers or {})
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        return self.Response({"status": response.status, "text": text})

    def get(self, path: str) -> Response:
        return self._request("GET", path)

    def head(self, path: str) -> Response:
        return self._request("HEAD", path)

    def post(self, path: str, data: Any) -> Response:
        """POST ``data`` as JSON (``None`` is sent as ``null``)."""
        body = json.dumps(data).encode()
        return self._request("POST", path, body, {"Content-Type": "application/json"})

    def post_file(self, path: str, filename: str, field: str = "file") -> Response:
        """POST the file at ``filename`` as a multipart/form-data upload in ``field``."""
        boundary = uuid.uuid4().hex
        with open(filename, "rb") as file:
            content = file.read()
        name = os.path.basename(filename)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        body = b"".join(
            [
                f"--{boundary}\r\n".encode(),
                f'Content-Disposition: form-data; name="{field}"; filename="{name}"\r\n'.encode(),
                f"Content-Type: {content_type}\r\n\r\n".encode(),
                content,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self._request("POST", path, body, headers)


class TestPublisher:
    """Publishes messages to a broker, for a consumer under test."""

    __test__ = False  # not a test case, for test runners that collect by name

    def __init__(self, host: str, port: int, vhost: str = "/") -> None:
        import pika

        parameters = pika.ConnectionParameters(host=host, port=port, virtual_host=vhost)
        self.connection = pika.BlockingConnection(parameters)
        self.channel = self.connection.channel()

    def publish(self, exchange: str, queue: str, message: str | bytes) -> None:
        """Publish ``message`` to ``exchange`` with the routing key ``queue``."""
        self.channel.basic_publish(exchange=exchange, routing_key=queue, body=message)


class WebhookTestHandler(tornado.web.RequestHandler):
    """Receives a webhook and logs its status and traceback."""

    def post(self) -> None:
        data = json.loads(self.request.body.decode("utf-8"))
        logger.info("%s", data.get("status", "No status received"))
        logger.info("%s", data.get("traceback", "No traceback received"))
        self.write("Received webhook")


class WebhookReceiverServer:
    """The application of the webhook receiver: ``POST /webhook``."""

    def make_http_receiver_app(self) -> tornado.web.Application:
        return tornado.web.Application([("/webhook", WebhookTestHandler)])
