"""Local fan-out: which of this edge's connections get which delivery, and the frame each gets.

A batch from the push service becomes, per connection, the sub-list of deliveries it subscribed
to; connections with the same sub-list share one frame, built once (usually: everyone on a topic).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol

from common.interest import InterestTable

from .frames import batch_frame

class DeliveryLike(Protocol):
    topic: str
    client_id: str
    frame: bytes
    retained: bool


class Fanout:
    """Topic and client-id interest of this edge's connections, and the retained state per topic."""

    def __init__(self) -> None:
        self.topics: InterestTable[str, Hashable] = InterestTable()
        self.client_ids: InterestTable[str, Hashable] = InterestTable()
        self._retained: dict[str, bytes] = {}

    def retained_frame(self, topic: str) -> bytes | None:
        return self._retained.get(topic)

    def forget_topic(self, topic: str) -> None:
        """The last local subscriber left: the retained state is no longer kept fresh."""
        self._retained.pop(topic, None)

    def route(self, deliveries: Sequence[DeliveryLike]) -> list[tuple[bytes, list[Hashable]]]:
        """Group connections by the frame (JSON bytes) they should receive: [(frame, [conn, ...]), ...]."""
        wanted: dict[Hashable, list[int]] = {}
        for index, delivery in enumerate(deliveries):
            if delivery.client_id:
                targets: Iterable[Hashable] = self.client_ids.subscribers(delivery.client_id)
            else:
                targets = self.topics.subscribers(delivery.topic)
                if delivery.retained:
                    self._retained[delivery.topic] = delivery.frame
            for connection in targets:
                indexes = wanted.get(connection)
                if indexes is None:
                    wanted[connection] = [index]
                else:
                    indexes.append(index)
        groups: dict[tuple[int, ...], list[Hashable]] = {}
        for connection, indexes in wanted.items():
            groups.setdefault(tuple(indexes), []).append(connection)
        return [
            (batch_frame([deliveries[i].frame for i in key]), connections) for key, connections in groups.items()
        ]
