"""Local routing: which of this edge's connections get which delivery, and the frame each gets. No I/O.

A batch from the push service becomes, per connection, the sub-list of deliveries it subscribed to;
connections with the same sub-list share one frame, built once (usually: everyone on a topic).
Several batches routed together (a busy edge) become several frames, written to a socket at once.
Every topic delivery passes the topic's sequencer first; a connection recovering a topic (its
session guards it) gets that topic's deliveries only through its session's `admit`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Sequence

from common.interest import InterestTable

from .frames import batch_frame, websocket_text_frame
from .sequencer import DeliveryLike, TopicSequencer

Routed = tuple[list[bytes], bytes, list[Hashable], list[DeliveryLike]]
Admit = Callable[[DeliveryLike], bool]


class DeliveryRouter:
    def __init__(self, sequencer: TopicSequencer | None = None) -> None:
        self.topics: InterestTable[str, Hashable] = InterestTable()
        self.client_ids: InterestTable[str, Hashable] = InterestTable()
        self.sequencer = sequencer if sequencer is not None else TopicSequencer()
        self._guarded: dict[str, dict[Hashable, Admit]] = {}  # topic -> connection -> its session's admit

    def guard(self, topic: str, connection: Hashable, admit: Admit) -> None:
        self._guarded.setdefault(topic, {})[connection] = admit

    def unguard(self, topic: str, connection: Hashable) -> None:
        guards = self._guarded.get(topic)
        if guards is not None:
            guards.pop(connection, None)
            if not guards:
                del self._guarded[topic]

    def notice_targets(self, notice: DeliveryLike) -> list[Hashable]:
        """The subscribers of `notice.topic` to tell now that the edge could not fill its gap; a session
        that guards the topic decides through its `admit` (it holds the notice behind a subscribe's answer)."""
        guards = self._guarded.get(notice.topic, {})
        return [c for c in self.topics.subscribers(notice.topic) if (admit := guards.get(c)) is None or admit(notice)]

    def remove_topics(self, connection: Hashable, topics: Iterable[str]) -> list[str]:
        """Drop `connection`'s interest in `topics`; returns those left with no local subscriber
        (their position and retained state are forgotten)."""
        last = []
        for topic in topics:
            self.unguard(topic, connection)
            if self.topics.remove(topic, connection):
                self.sequencer.forget(topic)
                last.append(topic)
        return last

    def remove_connection(self, connection: Hashable) -> list[str]:
        return self.remove_topics(connection, list(self.topics.keys_of(connection)))

    def route(self, batches: Sequence[Sequence[DeliveryLike]]) -> list[Routed]:
        """Group connections by what they should receive: [(frames, wire, [connection, ...], messages)].

        Each batch from the push service becomes at most one JSON frame per connection (a lone
        message as itself, several as a batch frame); `wire` is those frames as WebSocket frames,
        concatenated, for one write per socket; `messages` the deliveries they hold, in order (for a
        slow connection's queue). Equal frames and equal wires are built once."""
        single = self._flood_topic(batches)
        if single is not None:  # the common flood: one topic, every subscriber gets every frame
            return self._route_to_all(batches, single)
        wanted: dict[Hashable, list[tuple[int, int]]] = {}
        for batch_index, deliveries in enumerate(batches):
            for index, delivery in enumerate(deliveries):
                for connection in self._targets(delivery):
                    picks = wanted.get(connection)
                    if picks is None:
                        wanted[connection] = [(batch_index, index)]
                    else:
                        picks.append((batch_index, index))
        return self._frames_for(batches, wanted)

    def _targets(self, delivery: DeliveryLike) -> Iterable[Hashable]:
        if delivery.client_id:
            return self.client_ids.subscribers(delivery.client_id)
        topic = delivery.topic
        if topic not in self.topics or not self.sequencer.accept(delivery):
            return ()  # nobody here (its position is not kept), a repeat, or held for a gap
        targets: Iterable[Hashable] = self.topics.subscribers(topic)
        guards = self._guarded.get(topic)
        if guards:
            targets = [c for c in targets if (admit := guards.get(c)) is None or admit(delivery)]
        return targets

    @staticmethod
    def _frames_for(batches: Sequence[Sequence[DeliveryLike]], wanted: dict[Hashable, list[tuple[int, int]]]
                    ) -> list[Routed]:
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

    def _flood_topic(self, batches: Sequence[Sequence[DeliveryLike]]) -> str | None:
        """The one topic of these batches, if they hold only that topic, it is subscribed here, not
        held nor guarded, and they continue its position: then every subscriber gets every frame."""
        topic, expected = None, None
        for deliveries in batches:
            for delivery in deliveries:
                if delivery.client_id or (topic is not None and delivery.topic != topic):
                    return None
                if topic is None:
                    topic = delivery.topic
                    if topic not in self.topics or topic in self._guarded or self.sequencer.is_held(topic):
                        return None
                    last = self.sequencer.positions.get(topic)
                    if last is not None:
                        expected = (last[0] + 1, last[1])
                if delivery.offset and expected is not None and (delivery.offset, delivery.epoch) != expected:
                    return None  # not the next position: the careful path decides
                if delivery.retained and (delivery.replay or not self.sequencer.newer_state(topic, delivery)):
                    return None  # a replay, or a state that went out already: the sequencer's accept decides
                if delivery.offset:
                    expected = (delivery.offset + 1, delivery.epoch)
        return topic

    def _route_to_all(self, batches: Sequence[Sequence[DeliveryLike]], topic: str) -> list[Routed]:
        advance = self.sequencer.advance
        for deliveries in batches:
            for delivery in deliveries:
                advance(topic, delivery)
        payloads = [batch_frame([d.frame for d in deliveries]) for deliveries in batches if deliveries]
        wire = b"".join(websocket_text_frame(p) for p in payloads)
        subscribers = list(self.topics.subscribers(topic))
        return [(payloads, wire, subscribers, [d for deliveries in batches for d in deliveries])]
