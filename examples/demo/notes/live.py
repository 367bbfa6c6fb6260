"""The live page's feed: each note, once saved (by the JSON API, by the AMQP consumer
or from a shell), goes to the channel layer's group "notes", and every WebSocket of
the page gets it as JSON. Imported only when Django Channels is installed."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from notes.models import Note

GROUP = "notes"
# A Redis that does not answer must not hold the request, or the AMQP message, for
# the minutes a TCP connection attempt can take.
ANNOUNCE_TIMEOUT = 2.0

logger = logging.getLogger(__name__)


class NotesFeed(AsyncJsonWebsocketConsumer):
    """One open page: joins the group on connect (Channels' ``groups``), leaves it on
    disconnect, and forwards each note to the browser."""

    groups = [GROUP]

    async def note_created(self, event: dict) -> None:
        await self.send_json(event["note"])


async def send_to_group(note: dict) -> None:
    message = {"type": "note.created", "note": note}
    await asyncio.wait_for(get_channel_layer().group_send(GROUP, message), ANNOUNCE_TIMEOUT)


def announce(note: dict) -> None:
    try:
        async_to_sync(send_to_group)(note)
    except Exception as error:
        # The note is saved. A channel layer that is away costs the open pages this
        # update (they catch up when they reconnect), not the request its answer nor
        # the AMQP message its acknowledgement (a retry would save the note twice).
        reason = str(error) or type(error).__name__
        logger.warning("The live pages missed note %s: %s", note["id"], reason)


@receiver(post_save, sender=Note, dispatch_uid="notes.live.announce")
def announce_new_note(sender, instance: Note, created: bool, **kwargs) -> None:
    if created:
        # Not before the transaction commits: a page would show a note that a
        # rollback then takes back, and that /notes/ never lists.
        note = instance.as_dict()
        transaction.on_commit(lambda: announce(note))
