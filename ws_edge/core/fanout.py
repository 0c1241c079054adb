"""Local fan-out: which of this edge's connections get which delivery, and the frame each gets.

A batch from the push service becomes, per connection, the sub-list of deliveries it subscribed
to; connections with the same sub-list share one frame, built once (usually: everyone on a topic).
Several batches routed together (a busy edge) become several frames, written to a socket at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol

from common.interest import InterestTable

from .frames import batch_frame, websocket_text_frame


class DeliveryLike(Protocol):
    topic: str
    client_id: str
    frame: bytes
    retained: bool
    offset: int
    epoch: str
    conflation_key: str
    timestamp_ms: int  # when the push service accepted it (Unix ms)


Routed = tuple[list[bytes], bytes, list[Hashable], list[DeliveryLike]]


class Fanout:
    """Topic and client-id interest of this edge's connections, and the retained state per topic."""

    def __init__(self) -> None:
        self.topics: InterestTable[str, Hashable] = InterestTable()
        self.client_ids: InterestTable[str, Hashable] = InterestTable()
        self._retained: dict[str, bytes] = {}
        # Connections recovering a topic: its live deliveries wait for them here (see core/recovery).
        self._holding: dict[str, set[Hashable]] = {}
        self._held: dict[tuple[Hashable, str], list[DeliveryLike]] = {}
        self._floors: dict[tuple[Hashable, str], tuple[int, str]] = {}
        self._floor_topics: dict[str, int] = {}
        # The last history position delivered per topic: where to resume after the push stream drops.
        self.positions: dict[str, tuple[int, str]] = {}
        # Topics whose gap (the push stream dropped) is being filled: all their deliveries wait here.
        self._topic_holds: dict[str, list[DeliveryLike]] = {}
        self._discontinuities: dict[str, tuple[int, str]] = {}

    def take_discontinuities(self) -> dict[str, tuple[int, str]]:
        """Topics whose live stream skipped offsets or changed epoch since the last position (the
        topic is held from there): the edge fills the gap from history or tells the subscribers."""
        found, self._discontinuities = self._discontinuities, {}
        return found

    def hold_topic(self, topic: str) -> None:
        self._topic_holds.setdefault(topic, [])

    def release_topic(self, topic: str) -> list[DeliveryLike]:
        return self._topic_holds.pop(topic, [])

    def hold(self, connection: Hashable, topic: str) -> None:
        self._holding.setdefault(topic, set()).add(connection)
        self._held.setdefault((connection, topic), [])

    def set_floor(self, connection: Hashable, topic: str, offset: int, epoch: str) -> None:
        """`connection` already has `topic` up to `offset` (sent from history): skip what is older
        that is still on its way from the push service, until a newer message passes."""
        self._floors[(connection, topic)] = (offset, epoch)
        self._floor_topics[topic] = self._floor_topics.get(topic, 0) + 1

    def _passed_floor(self, connection: Hashable, delivery: DeliveryLike) -> bool:
        floor = self._floors.get((connection, delivery.topic))
        if floor is None:
            return True
        if delivery.epoch == floor[1] and delivery.offset <= floor[0]:
            return False
        self._drop_floor(connection, delivery.topic)
        return True

    def _drop_floor(self, connection: Hashable, topic: str) -> None:
        if self._floors.pop((connection, topic), None) is not None:
            left = self._floor_topics[topic] - 1
            if left:
                self._floor_topics[topic] = left
            else:
                del self._floor_topics[topic]

    def release(self, connection: Hashable, topic: str) -> list[DeliveryLike]:
        holders = self._holding.get(topic)
        if holders is not None:
            holders.discard(connection)
            if not holders:
                del self._holding[topic]
        return self._held.pop((connection, topic), [])

    def release_all(self, connection: Hashable) -> None:
        for _, topic in [key for key in self._held if key[0] == connection]:
            self.release(connection, topic)
        for _, topic in [key for key in self._floors if key[0] == connection]:
            self._drop_floor(connection, topic)

    def retained_frame(self, topic: str) -> bytes | None:
        return self._retained.get(topic)

    def forget_topic(self, topic: str) -> None:
        """The last local subscriber left: the retained state and position are no longer kept fresh."""
        self._retained.pop(topic, None)
        self.positions.pop(topic, None)

    def route(self, batches: Sequence[Sequence[DeliveryLike]]) -> list[Routed]:
        """Group connections by what they should receive: [(frames, wire, [connection, ...], messages)].

        Each batch from the push service becomes at most one JSON frame per connection (a lone
        message as itself, several as a batch frame); `wire` is those frames as WebSocket frames,
        concatenated, for one write per socket; `messages` the deliveries they hold, in order (for a
        slow connection's queue). Equal frames and equal wires are built once."""
        single = self._single_topic(batches)
        if (single is not None and single not in self._holding and single not in self._topic_holds
                and single not in self._floor_topics):  # the common flood: one topic, every subscriber gets every frame
            return self._route_to_all(batches, single)
        wanted: dict[Hashable, list[tuple[int, int]]] = {}
        for batch_index, deliveries in enumerate(batches):
            for index, delivery in enumerate(deliveries):
                if delivery.client_id:
                    targets: Iterable[Hashable] = self.client_ids.subscribers(delivery.client_id)
                else:
                    held = self._topic_holds.get(delivery.topic)
                    if held is not None:
                        held.append(delivery)
                        continue
                    if delivery.offset and not self._in_sequence(delivery):
                        continue
                    targets = self.topics.subscribers(delivery.topic)
                    if delivery.retained:
                        self._retained[delivery.topic] = delivery.frame
                    holders = self._holding.get(delivery.topic)
                    if holders:
                        for connection in holders:
                            self._held[(connection, delivery.topic)].append(delivery)
                        targets = [c for c in targets if c not in holders]
                    if delivery.topic in self._floor_topics:
                        targets = [c for c in targets if self._passed_floor(c, delivery)]
                for connection in targets:
                    picks = wanted.get(connection)
                    if picks is None:
                        wanted[connection] = [(batch_index, index)]
                    else:
                        picks.append((batch_index, index))
        groups: dict[tuple[tuple[int, int], ...], list[Hashable]] = {}
        for connection, picks in wanted.items():
            groups.setdefault(tuple(picks), []).append(connection)
        frames: dict[tuple[tuple[int, int], ...], tuple[bytes, bytes]] = {}  # picks of one batch -> frame
        routed: list[Routed] = []
        for picks, connections in groups.items():
            payloads, wires = [], []
            messages = [batches[b][i] for b, i in picks]
            for _, same_batch in itertools.groupby(picks, key=lambda pick: pick[0]):
                key = tuple(same_batch)
                built = frames.get(key)
                if built is None:
                    payload = batch_frame([batches[b][i].frame for b, i in key])
                    built = frames[key] = (payload, websocket_text_frame(payload))
                payloads.append(built[0])
                wires.append(built[1])
            routed.append((payloads, wires[0] if len(wires) == 1 else b"".join(wires), connections, messages))
        return routed

    def _in_sequence(self, delivery: DeliveryLike) -> bool:
        """Track the topic's position; False (and the delivery set aside) when it must not go out now:
        already delivered, or after a gap / in a new epoch (then the topic is held for the edge)."""
        topic, last = delivery.topic, self.positions.get(delivery.topic)
        if last is not None and not (delivery.epoch == last[1] and delivery.offset == last[0] + 1):
            if delivery.epoch == last[1] and delivery.offset <= last[0]:
                return delivery.retained  # a retained state replayed to a new subscriber goes; a repeat not
            self._topic_holds[topic] = [delivery]
            self._discontinuities[topic] = last
            return False
        self.positions[topic] = (delivery.offset, delivery.epoch)
        return True

    def _single_topic(self, batches: Sequence[Sequence[DeliveryLike]]) -> str | None:
        """The one topic of these batches, if they hold only that topic, continuing its position."""
        topic, expected = None, None
        for deliveries in batches:
            for delivery in deliveries:
                if delivery.client_id or (topic is not None and delivery.topic != topic):
                    return None
                if topic is None:
                    topic = delivery.topic
                    last = self.positions.get(topic)
                    if last is not None:
                        expected = (last[0] + 1, last[1])
                if delivery.offset and expected is not None and (delivery.offset, delivery.epoch) != expected:
                    return None  # not the next position: the careful path decides
                if delivery.offset:
                    expected = (delivery.offset + 1, delivery.epoch)
        return topic

    def _route_to_all(
        self, batches: Sequence[Sequence[DeliveryLike]], topic: str
    ) -> list[Routed]:
        subscribers = self.topics.subscribers(topic)
        for deliveries in batches:
            for delivery in deliveries:
                if delivery.retained:
                    self._retained[topic] = delivery.frame
                if delivery.offset:
                    self.positions[topic] = (delivery.offset, delivery.epoch)  # checked by _single_topic
        if not subscribers:
            return []
        payloads = [batch_frame([d.frame for d in deliveries]) for deliveries in batches if deliveries]
        wire = b"".join(websocket_text_frame(p) for p in payloads)
        return [(payloads, wire, list(subscribers), [d for deliveries in batches for d in deliveries])]
