"""The demo's AMQP consumer: every message on its queue becomes a note.

python manage.py consume notes.consumers.NoteHandler --queue notes --exchange demo

A message that is not UTF-8 text is rejected (dead-lettered with
``--dead-letter-exchange``, else dropped) and logged in one line naming its routing
key and size, never its bytes.
"""

import logging

from hurricane.amqp.basehandler import TopicHandler
from notes.models import Note

logger = logging.getLogger(__name__)


class NoteHandler(TopicHandler):
    def on_message(self, _unused_channel, basic_deliver, properties, body):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            # Not text: no retry can fix it, so dead-letter it (or drop it) at once.
            logger.warning(
                "Rejected a message that is not UTF-8 text (routing key %r, %d bytes, "
                "invalid at byte %d); %s",
                basic_deliver.routing_key,
                len(body),
                error.start,
                "dead-lettered" if self.dead_letter_exchange else "dropped",
            )
            self.reject_message(basic_deliver.delivery_tag)
            return
        # A database error propagates: Hurricane requeues the message and pauses.
        Note.objects.create(text=text[:200])
        self.acknowledge_message(basic_deliver.delivery_tag)
