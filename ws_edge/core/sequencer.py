"""Per topic, the edge's position in the push service's stream, and the retained state. No I/O.

Every positioned delivery of a topic that has local subscribers passes `accept`: the next offset goes
on; a repeat is dropped (but for late copies of what a told position's read saw, `_late`); a skipped
offset or a new epoch means the edge missed something (the push stream dropped, Redis lost its data),
so the topic is held from there and the edge fills the gap from history (`take_gaps`, then `resume`)
or tells the subscribers. A retained state goes only if newer than the one that went out last
(`newer_state`); a replay of one (push.v1 `Delivery.replay`) never moves a position. A topic's position and retained state
are kept only while it has local subscribers (`forget`): deliveries that arrive after the last one
left must not move a position that nobody will continue from.

A topic that had nothing published when it was subscribed here starts at (0, ""): before the first
message of whatever epoch comes (its name is not known before that message is published).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol


class DeliveryLike(Protocol):
    topic: str
    client_id: str
    frame: bytes
    retained: bool
    replay: bool  # a retained state sent again because the edge declared the topic, not a message published now
    offset: int
    epoch: str
    conflation_key: str
    timestamp_ms: int  # when the push service accepted it (Unix ms)


class _State(NamedTuple):
    frame: bytes
    offset: int
    epoch: str
    timestamp_ms: int
    replay: bool

    @classmethod
    def of(cls, delivery: DeliveryLike) -> _State:
        return cls(delivery.frame, delivery.offset, delivery.epoch, delivery.timestamp_ms, delivery.replay)


class TopicSequencer:
    def __init__(self) -> None:
        self.positions: dict[str, tuple[int, str]] = {}  # the last position delivered, per topic
        # The retained state that went out last, per topic, as plain values (a delivery would keep alive
        # the whole response it was parsed from).
        self._state: dict[str, _State] = {}
        # Topics started at a position the push service told, with the last offset up to it sent since:
        # its read may have seen messages published after the subscription whose copies reach this
        # edge later (Redis's pub/sub is a connection of its own): each goes once, in order, until the
        # stream passes the position.
        self._late: dict[str, int] = {}
        # Topics whose gap is being filled: which hold each is in, and what came meanwhile. A gap fill
        # resumes only the hold it was started for. (Fills overlap: a stream loss's and a broker
        # resync's, or one still reading history when a newer gap held the topic again; the stale one
        # would resume the newer hold with its old answer, and that hold's own fill, finding the topic
        # resumed, would drop what it read.)
        self._held: dict[str, tuple[int, list[DeliveryLike]]] = {}
        # Positions the push service told (`tell`) that wait for the deliveries queued before them: a
        # topic forgotten meanwhile drops its own (a new subscription gets its own position).
        self._told: dict[str, tuple[int, str]] = {}
        self._next_hold = 0
        self._gaps: dict[str, tuple[int, str]] = {}  # topics found with a gap, from where

    def accept(self, delivery: DeliveryLike) -> bool:
        """Whether `delivery` goes out now (its position recorded); False when it is a repeat, or
        when the topic is held (then it waits for `resume`)."""
        topic = delivery.topic
        held = self._held.get(topic)
        if held is not None:
            held[1].append(delivery)
            return False
        if delivery.replay:
            # The push service replays a topic's retained state when the edge declares it (a first
            # subscriber, every topic of a new stream). It tells the state, not where the topic stands
            # (messages without state may have followed it, from before this subscription; its epoch
            # may be one that history has let go): it neither places the topic nor opens a gap.
            return self._take_state(topic, delivery)
        if delivery.offset:
            last = self.positions.get(topic)
            # The next offset in the same epoch; after (0, ""), offset 1 of any.
            if last is not None and not (delivery.offset == last[0] + 1 and (delivery.epoch == last[1] or not last[1])):
                if delivery.epoch == last[1] and delivery.offset <= last[0]:
                    late = self._late.get(topic) if self._late else None
                    if late is not None and delivery.offset > late:  # the told position's read saw it
                        self._late[topic] = delivery.offset
                        return not delivery.retained or self._take_state(topic, delivery)
                    # A repeat never goes; a retained state here is a replay from a push service that
                    # predates `replay`.
                    return delivery.retained and self._take_state(topic, delivery)
                self._start_hold(topic, [delivery])
                self._gaps[topic] = last
                return False
            self.positions[topic] = (delivery.offset, delivery.epoch)
            if self._late:
                self._late.pop(topic, None)  # past the told position: nothing before it can come any more
        if delivery.retained:
            return self._take_state(topic, delivery)  # (its position is recorded either way)
        return True

    def _take_state(self, topic: str, delivery: DeliveryLike) -> bool:
        """Whether a retained state goes: only if it is newer than the one that went out last, which
        reached every subscriber then and was handed to each that came later (a replay's live copy,
        which Redis may deliver after the replay, is no news; an older state would put every
        subscriber's state back). Kept as the topic's state if it goes."""
        if not self.newer_state(topic, delivery):
            return False
        self._state[topic] = _State.of(delivery)
        return True

    def newer_state(self, topic: str, delivery: DeliveryLike) -> bool:
        """Whether retained `delivery` is newer than the state that went out last. By offset within an
        epoch. Else (no history, or another epoch) the same frame is not; live states come in publish
        order, so a live one after a live one is; only a replay and a live state are ordered by when
        they were accepted. (A replay's read races the live copies of states published just before it:
        those come after it, older. Timestamps are each replica's own clock, so they decide nothing else.)"""
        kept = self._state.get(topic)
        if kept is None:
            return True
        if delivery.offset and kept.offset and delivery.epoch == kept.epoch:
            return delivery.offset > kept.offset
        if delivery.frame == kept.frame:
            return False
        if delivery.replay or kept.replay:
            return delivery.timestamp_ms >= kept.timestamp_ms
        return True

    def is_held(self, topic: str) -> bool:
        return topic in self._held

    def held_topics(self) -> list[str]:
        return list(self._held)

    def hold_id(self, topic: str) -> int | None:
        """Which hold `topic` is in (None: not held): what a gap fill resumes, and nothing else."""
        held = self._held.get(topic)
        return None if held is None else held[0]

    def first_held(self, topic: str) -> tuple[int, str] | None:
        """The position of the first delivery with one that `topic`'s hold keeps (None: none yet)."""
        held = self._held.get(topic)
        # (not a replay's: it tells the state, not where the stream went)
        return next(((d.offset, d.epoch) for d in held[1] if d.offset and not d.replay), None) if held is not None else None

    def _start_hold(self, topic: str, held: list[DeliveryLike]) -> None:
        self._late.pop(topic, None)  # (the fill reads on from the position)
        self._next_hold += 1
        self._held[topic] = (self._next_hold, held)

    def hold(self, topic: str) -> None:
        """Hold `topic`'s deliveries (the push stream dropped, or its broker reconnected: the gap is
        filled from history). A topic held already keeps what it holds, under a new hold: a fill begun
        before (its history read maybe older than what was missed) then ends nothing."""
        held = self._held.get(topic)
        self._start_hold(topic, [] if held is None else held[1])

    def start_at(self, topic: str, position: tuple[int, str]) -> None:
        """Where the push service says `topic` stood when it took this edge's interest ((0, ""): nothing
        published yet): the topic goes on from there if nothing has placed it yet (no delivery since it
        was subscribed, and not held)."""
        if not self._placed(topic):
            self.positions[topic] = position
            if position[0]:
                self._late[topic] = 0

    def tell(self, topic: str, position: tuple[int, str]) -> None:
        """Where the push service said `topic` stood, to `start_at` once what was queued before it is routed."""
        self._told[topic] = position

    def start_told(self) -> None:
        """`start_at` every told position."""
        told, self._told = self._told, {}
        for topic, position in told.items():
            self.start_at(topic, position)

    @property
    def told(self) -> bool:
        return bool(self._told)

    def unplaced(self, topics: Iterable[str]) -> list[str]:
        """Those of `topics` that a position told now would start (`start_at`): neither placed nor held."""
        return [topic for topic in topics if not self._placed(topic)]

    def _placed(self, topic: str) -> bool:
        return topic in self.positions or topic in self._held

    def take_gaps(self) -> dict[str, tuple[int, str]]:
        """Topics whose stream skipped offsets or changed epoch, with the last position before it."""
        found, self._gaps = self._gaps, {}
        return found

    def resume(self, topic: str, position: tuple[int, str] | None) -> list[DeliveryLike]:
        """End the hold of `topic`, continuing from `position` (None: from whatever comes next);
        returns the deliveries held meanwhile, for the caller to route again (they pass `accept`)."""
        if position is None:
            self.positions.pop(topic, None)
        else:
            self.positions[topic] = position
        return self._held.pop(topic, (0, []))[1]

    def history_at(self, topic: str, position: tuple[int, str]) -> None:
        """Where history says `topic` is now, as a fill that could not recover it read. A state that went
        out past it in its epoch lost its offset with history (a Redis failover lost the last writes),
        and other messages will use that offset again: the state is ordered by arrival from here."""
        kept = self._state.get(topic)
        if kept is not None and kept.offset > position[0] and kept.epoch == position[1]:
            self._state[topic] = kept._replace(offset=0)

    def advance(self, topic: str, delivery: DeliveryLike) -> None:
        """Record a delivery known to continue the topic's position (the flood path checked it)."""
        if delivery.offset:
            self.positions[topic] = (delivery.offset, delivery.epoch)
        if self._late:
            self._late.pop(topic, None)
        if delivery.retained:
            self._state[topic] = _State.of(delivery)  # (the flood path takes only a newer state)

    def retained_frame(self, topic: str) -> bytes | None:
        state = self._state.get(topic)
        return None if state is None else state.frame

    def forget(self, topic: str) -> None:
        """The last local subscriber left."""
        self._state.pop(topic, None)
        self._late.pop(topic, None)
        self.positions.pop(topic, None)
        self._held.pop(topic, None)
        self._gaps.pop(topic, None)
        self._told.pop(topic, None)
