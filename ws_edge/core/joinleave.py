"""Join/leave events of one edge's topics, coalesced under churn; no I/O, the clock passed in.

Every join/leave event of a topic reaches the edge once (the push service publishes it once per
change); the edge hands it to each of its connections that subscribed with `join_leave`. While a
topic's events stay under `rate` per second (with a burst of as many), each goes on as it came.
Past that, the topic is summarised: events are only counted, and every `interval` one
`presence_summary` frame tells its subscribers how many joined and left (and that they may read
`presence_stats` for the count); after an interval with no event the topic's events flow one by one
again. So 50 joins and leaves a second in a topic of 2,000 subscribers cost each subscriber one frame
a second instead of 100 (centrifuge-dart #89 is the storm this avoids).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .frames import new_id
from .ratelimit import TokenBucket


@dataclass(slots=True)
class _Topic:
    bucket: TokenBucket
    summary_due: float | None = None  # summarising until then (None: events flow one by one)
    since_ms: int = 0
    joins: int = 0
    leaves: int = 0


class JoinLeaveGate:
    def __init__(self, rate: float = 10.0, interval: float = 1.0) -> None:
        self.rate = rate
        self.interval = interval
        self._topics: dict[str, _Topic] = {}
        self.summarised = 0  # events counted into summaries instead of sent

    def event(self, topic: str, join: bool, now: float, now_ms: int) -> bool:
        """One join (or leave) of `topic`: True to send its frame now; False when it was counted
        into the topic's next summary."""
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(TokenBucket(self.rate, max(1.0, self.rate), now))
        if state.summary_due is None and state.bucket.allow(now):
            return True
        if state.summary_due is None:
            state.summary_due, state.since_ms = now + self.interval, now_ms
        if join:
            state.joins += 1
        else:
            state.leaves += 1
        self.summarised += 1
        return False

    def deadline(self) -> float | None:
        """When `due` has something to say next."""
        return min((s.summary_due for s in self._topics.values() if s.summary_due is not None), default=None)

    def due(self, now: float, now_ms: int) -> list[tuple[str, bytes]]:
        """The summary frames whose interval has passed, by topic. A topic with nothing counted in
        its interval flows one by one again; one whose bucket is full again is forgotten."""
        frames = []
        for topic, state in list(self._topics.items()):
            if state.summary_due is None:
                if state.bucket.full(now):
                    del self._topics[topic]
                continue
            if state.summary_due > now:
                continue
            if state.joins or state.leaves:
                frames.append((topic, summary_frame(topic, state.joins, state.leaves, state.since_ms, now_ms)))
                state.summary_due, state.since_ms, state.joins, state.leaves = now + self.interval, now_ms, 0, 0
            else:
                state.summary_due = None
        return frames

    def forget(self, topic: str) -> None:
        """No connection of this edge wants the topic's events any more."""
        self._topics.pop(topic, None)

    def __len__(self) -> int:
        return len(self._topics)


def summary_frame(topic: str, joins: int, leaves: int, since_ms: int, now_ms: int) -> bytes:
    return orjson.dumps({"type": "presence_summary", "id": new_id("presence_summary"), "timestamp": now_ms,
                         "data": {"joins": joins, "leaves": leaves, "since": since_ms}, "topic": topic})
