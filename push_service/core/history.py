"""History per topic, bounded by count and age, with positions `{offset, epoch}`. Time is passed in.

Offsets grow by one per message on a topic with history; the epoch names one life of the store (a
restart of the in-memory engine is a new epoch). A reader that says where it was gets exactly what
it missed, or is told why it cannot (the epoch changed, or the gap is older than what is kept).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fnmatch import fnmatchcase

import orjson

from .publication import Publication


@dataclass(frozen=True, slots=True)
class HistoryRule:
    pattern: str
    size: int  # messages kept; 0 keeps none (and the topic's messages carry no position)
    ttl: float  # seconds a message is kept


DEFAULT_HISTORY = (
    HistoryRule("task:progress", size=100, ttl=60),  # superseded quickly: keep it short
    HistoryRule("user:*", size=1000, ttl=24 * 3600),
    HistoryRule("*", size=1000, ttl=300),
)


class HistoryPolicy:
    def __init__(self, rules: tuple[HistoryRule, ...] = DEFAULT_HISTORY) -> None:
        self.rules = rules

    @classmethod
    def from_json(cls, text: str) -> HistoryPolicy:
        """`[{"pattern": "task:progress", "size": 100, "ttl": 60}, ...]`, first match wins."""
        items = orjson.loads(text)
        if not isinstance(items, list):
            raise ValueError("history rules must be a JSON list")
        rules = tuple(HistoryRule(str(i["pattern"]), int(i.get("size", 0)), float(i.get("ttl", 0))) for i in items)
        if any(r.size < 0 or r.ttl < 0 for r in rules):
            raise ValueError("history size and ttl must not be negative")
        return cls(rules)

    def rule_for(self, topic: str) -> HistoryRule | None:
        for rule in self.rules:
            if fnmatchcase(topic, rule.pattern):
                return rule if rule.size > 0 and rule.ttl > 0 else None
        return None


@dataclass(frozen=True, slots=True)
class HistoryRead:
    publications: list[Publication]
    offset: int
    epoch: str
    recovered: bool
    reason: str = ""


class _TopicStream:
    __slots__ = ("rule", "offset", "entries")

    def __init__(self, rule: HistoryRule) -> None:
        self.rule = rule
        self.offset = 0
        self.entries: deque[tuple[float, Publication]] = deque()

    def prune(self, now: float) -> None:
        entries, rule = self.entries, self.rule
        while entries and (len(entries) > rule.size or now - entries[0][0] >= rule.ttl):
            entries.popleft()


class HistoryStore:
    def __init__(self, policy: HistoryPolicy, epoch: str) -> None:
        self.policy = policy
        self.epoch = epoch
        self._streams: dict[str, _TopicStream] = {}

    def append(self, publication: Publication, now: float) -> Publication:
        """The publication with its position (its frame too), kept; unchanged if the topic keeps none."""
        if publication.client_id:
            return publication
        stream = self._streams.get(publication.topic)
        if stream is None:
            rule = self.policy.rule_for(publication.topic)
            if rule is None:
                return publication
            stream = self._streams[publication.topic] = _TopicStream(rule)
        stream.offset += 1
        positioned = publication.at(stream.offset, self.epoch)
        stream.entries.append((now, positioned))
        stream.prune(now)
        return positioned

    def read(self, topic: str, since: int | None, epoch: str, now: float, limit: int = 0) -> HistoryRead:
        """After `since` in `epoch` (recovery), or the latest `limit` messages when `since` is None."""
        stream = self._streams.get(topic)
        if stream is None:
            rule = self.policy.rule_for(topic)
            if rule is None:
                return no_history(since, self.epoch)
            stream = _TopicStream(rule)  # nothing published in this epoch yet (not stored: reads are free)
        stream.prune(now)
        return decide([p for _, p in stream.entries], stream.offset, self.epoch, since, epoch, limit)


def no_history(since: int | None, epoch: str) -> HistoryRead:
    return HistoryRead([], 0, epoch, since is None, "" if since is None else "no history for this topic")


def decide(entries: list[Publication], offset: int, current_epoch: str, since: int | None, epoch: str,
           limit: int = 0) -> HistoryRead:
    """What a history read answers, from what is kept (`entries`, oldest first, within their bounds)
    and the topic's position: the same for every engine."""
    if since is None:
        return HistoryRead(entries[-limit:] if limit else entries, offset, current_epoch, True)
    if epoch != current_epoch:
        return HistoryRead([], offset, current_epoch, False, "epoch changed")
    if since > offset:
        return HistoryRead([], offset, current_epoch, False, "ahead of the stream")
    oldest = entries[0].offset if entries else offset + 1
    if since + 1 < oldest:
        return HistoryRead([], offset, current_epoch, False, "too old")
    return HistoryRead([p for p in entries if p.offset > since], offset, current_epoch, True)
