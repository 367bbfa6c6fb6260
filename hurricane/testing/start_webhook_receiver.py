"""The webhook receiver that HurricaneWebhookServerDriver runs: ``POST
http://localhost:8074/webhook``, each webhook's status and traceback logged.

    python -m hurricane.testing.start_webhook_receiver
"""

from __future__ import annotations

import asyncio
import logging

from hurricane.testing.actors import WebhookReceiverServer

RECEIVER_PORT = 8074


async def receive() -> None:
    WebhookReceiverServer().make_http_receiver_app().listen(RECEIVER_PORT)
    logging.getLogger("hurricane.testing").info("Started webhook receiver server")
    await asyncio.Event().wait()


def start_receiver() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    asyncio.run(receive())


if __name__ == "__main__":
    start_receiver()
