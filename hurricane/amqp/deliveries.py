"""How often a message has been delivered, and the limit on it (``--max-deliveries``).

A quorum queue counts a message's earlier deliveries itself, in the header
``x-delivery-count``: that count holds across consumers, pods and restarts. A classic
queue only says whether a message was delivered before (``redelivered``), so for those
the consumer keeps a count of its own, in this process: a message that goes back to
the queue and on to another pod, or outlives this process, starts again from 2 there.

The handler thread alone uses a :class:`DeliveryCounter`: no locks.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any

# Messages whose deliveries the counter remembers: those that went back to the queue
# from this process and have not come back to be settled for good. Past this many,
# the oldest go first (and would count from 2 again): the table cannot
# grow without end when requeued messages are taken by other pods.
REMEMBERED_MESSAGES = 10_000
DELIVERY_COUNT_HEADER = "x-delivery-count"


class Delivery:
    """One delivery of a message, as far as this process can tell."""

    __slots__ = ("method", "properties", "body", "number", "_key")

    def __init__(self, method: Any, properties: Any, body: bytes, number: int = 1) -> None:
        self.method = method
        self.properties = properties
        self.body = body
        self.number = number  # 1 for the first delivery
        self._key: str | bytes | None = None

    @property
    def key(self) -> str | bytes:
        """What identifies the message across its deliveries: its message_id if it has
        one, else a digest of where it was published and what it carries. Headers the
        broker sets (``x-...``) change from one delivery to the next and are left out."""
        if self._key is None:
            message_id = self.properties.message_id
            if message_id:
                self._key = message_id
            else:
                digest = hashlib.blake2b(digest_size=16)
                headers = self.properties.headers or {}
                stable = {k: v for k, v in headers.items() if not k.startswith("x-")}
                for part in (self.method.exchange, self.method.routing_key, repr(stable)):
                    digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
                digest.update(self.body)
                self._key = digest.digest()
        return self._key


class DeliveryCounter:
    """Numbers each delivery and says whether the limit allows it (``limit`` 0: no
    limit). ``from_header``: the queue is a quorum queue, whose own count is trusted
    (on a classic queue, a publisher could have set the header)."""

    def __init__(self, limit: int, from_header: bool) -> None:
        self.limit = limit
        self.from_header = from_header
        # key -> (number of the last delivery seen here, whether on_message raised on it)
        self._returned: collections.OrderedDict = collections.OrderedDict()

    def delivered(self, method: Any, properties: Any, body: bytes) -> Delivery:
        delivery = Delivery(method, properties, body)
        if self.from_header and properties.headers:
            earlier = properties.headers.get(DELIVERY_COUNT_HEADER)
            if isinstance(earlier, int) and not isinstance(earlier, bool) and earlier >= 0:
                delivery.number = earlier + 1
                return delivery
        if method.redelivered:
            # Delivered before: here (remembered), or elsewhere, or before a restart
            # (then at least once).
            seen = self._returned.get(delivery.key)
            delivery.number = seen[0] + 1 if seen else 2
        return delivery

    def allows(self, number: int) -> bool:
        """May delivery ``number`` of a message be handled? The one decision on the limit."""
        return not self.limit or number <= self.limit

    def failed_here_before(self, delivery: Delivery) -> bool:
        """Did on_message already raise on this message in this process?"""
        if delivery.number == 1:
            return False
        seen = self._returned.get(delivery.key)
        return bool(seen and seen[1])

    def returned(self, delivery: Delivery, failed: bool) -> None:
        """The message went back to the queue."""
        table = self._returned
        key = delivery.key
        earlier = table.pop(key, None)
        table[key] = (delivery.number, failed or bool(earlier and earlier[1]))
        while len(table) > REMEMBERED_MESSAGES:
            table.popitem(last=False)

    def settled(self, delivery: Delivery) -> None:
        """The message left the queue for good (acknowledged, rejected, given up)."""
        if delivery.number > 1 or delivery._key is not None:
            self._returned.pop(delivery.key, None)
