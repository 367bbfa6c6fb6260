"""The demo's AMQP consumer: every message on its queue becomes a note.

python manage.py consume notes.consumers.NoteHandler --queue notes --exchange demo
"""

from hurricane.amqp.basehandler import TopicHandler
from notes.models import Note


class NoteHandler(TopicHandler):
    def on_message(self, _unused_channel, basic_deliver, properties, body):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Not text: no retry can fix it, so dead-letter it (or drop it) at once.
            self.reject_message(basic_deliver.delivery_tag)
            return
        # A database error propagates: Hurricane requeues the message and pauses.
        Note.objects.create(text=text[:200])
        self.acknowledge_message(basic_deliver.delivery_tag)
