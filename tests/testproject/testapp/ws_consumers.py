"""Django Channels consumers, written as Channels' documentation writes them; served
by Hurricane unchanged (tests/test_channels.py)."""

import os

from channels.generic.websocket import (
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)


class EchoConsumer(WebsocketConsumer):
    """A sync consumer: runs in a thread, as Channels runs sync consumers."""

    def connect(self):
        self.accept()

    def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            self.send(text_data=f"echo: {text_data}")
        else:
            self.send(bytes_data=bytes_data)


class WhoAmIConsumer(JsonWebsocketConsumer):
    """Answers every JSON message with who the session says the user is."""

    def connect(self):
        self.accept()

    def receive_json(self, content, **kwargs):
        user = self.scope["user"]
        self.send_json(
            {
                "asked": content,
                "user": user.username if user.is_authenticated else None,
            }
        )


class ChatConsumer(AsyncWebsocketConsumer):
    """Channels' tutorial chat: a group per room over the channel layer. Says which
    process it runs in first, so that a test can tell processes apart."""

    async def connect(self):
        self.group = f"chat_{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(text_data=f"pid {os.getpid()}")

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "text": text_data, "from": os.getpid()}
        )

    async def chat_message(self, event):
        await self.send(text_data=f"{event['from']}: {event['text']}")
