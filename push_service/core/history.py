"""History per topic, bounded by count, age and bytes (per topic and in total), with positions
`{offset, epoch}`, read in pages. Time is passed in.

Offsets grow by one per message on a topic with history; an epoch names one life of a topic's
history. A reader that says where it was gets exactly what it missed, or is told why it cannot (the
epoch changed, or the gap is older than what is kept).

Bounds (the memory engine's; the Redis engine applies the same per topic, in its Lua script):
- per topic: the rule's count and age, and `topic_bytes` of its messages' frames;
- in total: `total_bytes` over every topic (messages and a per-topic overhead); past it, the topic
  published to least recently loses its oldest messages first, and goes when it holds none;
- idle topics: `sweep(now)` (called periodically by the engine) forgets a topic that saw nothing
  published for its rule's age (so holds nothing); its cost is the number of topics it forgets, not of
  all topics. Expired messages of the others go when they are next published to or read.
A forgotten topic keeps no position: when it is published to again it starts a new epoch (offset 1),
so a position from its previous life is refused ("epoch changed"), never silently misread.

Reads are pages: at most `PageLimits.max_count` messages and `max_bytes` of frames (at least one
message), `truncated` when more remain after the page (ask again from its last offset).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import islice

import orjson

from .publication import Publication

# What keeping a message costs beyond its frame (the Publication, its id, the deque slot), and a topic
# beyond its messages (its stream object, deque, name and dict entry): estimates, so that many tiny
# messages or many empty topics are counted too.
ENTRY_OVERHEAD = 256
TOPIC_OVERHEAD = 1024


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


@dataclass(frozen=True, slots=True)
class PageLimits:
    """What one history read returns at most: messages, and bytes of their frames."""

    max_count: int = 5000
    max_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_count < 1 or self.max_bytes < 1:
            raise ValueError("a history page holds at least one message and one byte")


class HistoryPolicy:
    def __init__(self, rules: tuple[HistoryRule, ...] = DEFAULT_HISTORY, *, topic_bytes: int = 4 * 1024 * 1024,
                 total_bytes: int = 256 * 1024 * 1024) -> None:
        if topic_bytes < 1 or total_bytes < 1:
            raise ValueError("history byte bounds must be positive")
        self.rules = rules
        self.topic_bytes = topic_bytes
        self.total_bytes = total_bytes

    @classmethod
    def from_json(cls, text: str, **bounds: int) -> HistoryPolicy:
        """`[{"pattern": "task:progress", "size": 100, "ttl": 60}, ...]`, first match wins; a ValueError
        names what is wrong."""
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"history rules are not JSON: {exc}") from None
        if not isinstance(items, list):
            raise ValueError("history rules must be a JSON list")
        return cls(tuple(_rule(n, item) for n, item in enumerate(items, 1)), **bounds)

    def rule_for(self, topic: str) -> HistoryRule | None:
        for rule in self.rules:
            if fnmatchcase(topic, rule.pattern):
                return rule if rule.size > 0 and rule.ttl > 0 else None
        return None


def _rule(n: int, item: object) -> HistoryRule:
    """Rule `n` of the JSON list, checked: a rule that keeps messages says for how long (a missing
    ttl was 0, which kept none, silently)."""
    if not isinstance(item, dict) or not isinstance(item.get("pattern"), str) or not item["pattern"]:
        raise ValueError(f"history rule {n} must be an object with a pattern (a string), e.g. "
                         '{"pattern": "chat:*", "size": 100, "ttl": 60}')
    size, ttl = item.get("size", 0), item.get("ttl")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"history rule {n} ({item['pattern']}): size must be a whole number, 0 or more")
    if ttl is None and size > 0:
        raise ValueError(f"history rule {n} ({item['pattern']}): a rule that keeps messages needs a ttl (seconds)")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0):
        raise ValueError(f"history rule {n} ({item['pattern']}): ttl must be a number of seconds, 0 or more")
    return HistoryRule(item["pattern"], size, float(ttl or 0))


@dataclass(frozen=True, slots=True)
class HistoryRead:
    publications: list[Publication]
    offset: int
    epoch: str
    recovered: bool
    reason: str = ""
    truncated: bool = False  # more came after the last of `publications`: read again from its offset


def entry_bytes(publication: Publication) -> int:
    return len(publication.frame) + ENTRY_OVERHEAD


class _TopicStream:
    __slots__ = ("rule", "epoch", "offset", "entries", "bytes", "last_append")

    def __init__(self, rule: HistoryRule, epoch: str) -> None:
        self.rule = rule
        self.epoch = epoch
        self.offset = 0
        self.entries: deque[tuple[float, Publication]] = deque()
        self.bytes = 0  # of its entries' frames (what the per-topic bound counts)
        self.last_append = 0.0

    def drop_oldest(self) -> int:
        """Returns what the entry counted against the total bound."""
        _, publication = self.entries.popleft()
        self.bytes -= len(publication.frame)
        return entry_bytes(publication)

    def prune(self, now: float, topic_bytes: int) -> int:
        """Drop what is past the count, age and byte bounds; returns what it counted in total."""
        entries, rule, freed = self.entries, self.rule, 0
        while entries and (len(entries) > rule.size or self.bytes > topic_bytes or now - entries[0][0] >= rule.ttl):
            freed += self.drop_oldest()
        return freed


class HistoryStore:
    def __init__(self, policy: HistoryPolicy, epoch: str) -> None:
        self.policy = policy
        self.epoch = epoch
        # Least recently published to first: what the total bound takes from first.
        self._streams: OrderedDict[str, _TopicStream] = OrderedDict()
        # The same per rule: one age per rule, so the first of each is the first to be idle.
        self._by_rule: dict[HistoryRule, OrderedDict[str, _TopicStream]] = {}
        self._forgotten = 0  # topics forgotten so far: a topic created after that starts a new epoch
        self.bytes = 0  # every kept message and topic, as counted against policy.total_bytes

    def _new_epoch(self) -> str:
        return self.epoch if not self._forgotten else f"{self.epoch}.{self._forgotten}"

    def append(self, publication: Publication, now: float) -> Publication:
        """The publication with its position (its frame too), kept; unchanged if the topic keeps none."""
        if publication.client_id:
            return publication
        topic = publication.topic
        stream = self._streams.get(topic)
        if stream is None:
            rule = self.policy.rule_for(topic)
            if rule is None:
                return publication
            stream = self._streams[topic] = _TopicStream(rule, self._new_epoch())
            self._by_rule.setdefault(rule, OrderedDict())[topic] = stream
            self.bytes += TOPIC_OVERHEAD + len(topic)
        else:
            self._streams.move_to_end(topic)
            self._by_rule[stream.rule].move_to_end(topic)
        stream.offset += 1
        stream.last_append = now
        positioned = publication.at(stream.offset, stream.epoch)
        stream.entries.append((now, positioned))
        stream.bytes += len(positioned.frame)
        self.bytes += entry_bytes(positioned) - stream.prune(now, self.policy.topic_bytes)
        self._within_total()
        return positioned

    def _within_total(self) -> None:
        while self.bytes > self.policy.total_bytes and self._streams:
            topic, stream = next(iter(self._streams.items()))
            if stream.entries:
                self.bytes -= stream.drop_oldest()
            else:
                self._forget(topic)

    def _forget(self, topic: str) -> None:
        stream = self._streams.pop(topic)
        del self._by_rule[stream.rule][topic]
        self.bytes -= TOPIC_OVERHEAD + len(topic)
        self._forgotten += 1

    def sweep(self, now: float) -> int:
        """Forget idle topics (nothing published for their rule's age, so nothing kept); returns how
        many. Visits only those, and the first busy one per rule: call it periodically."""
        forgotten = 0
        for rule, streams in self._by_rule.items():
            while streams:
                topic, stream = next(iter(streams.items()))
                if now - stream.last_append < rule.ttl:
                    break
                self.bytes -= stream.prune(now, self.policy.topic_bytes)  # every message: all are older
                self._forget(topic)
                forgotten += 1
        return forgotten

    def read(self, topic: str, since: int | None, epoch: str, now: float, limit: int = 0,
             page: PageLimits | None = None) -> HistoryRead:
        """After `since` in `epoch` (recovery), or the latest `limit` messages when `since` is None;
        one page of it."""
        stream = self._streams.get(topic)
        if stream is None:
            rule = self.policy.rule_for(topic)
            if rule is None:  # no epoch, as from every engine: nothing after a loss can be recovered
                return no_history(since)
            # Nothing published in this epoch yet (not stored: reads are free).
            return decide([], 0, self._new_epoch(), since, epoch, limit, page)
        self.bytes -= stream.prune(now, self.policy.topic_bytes)
        entries: Iterable[tuple[float, Publication]] = stream.entries
        if since is not None and stream.entries:  # offsets are contiguous: start at the first one after since
            entries = islice(stream.entries, max(0, since + 1 - stream.entries[0][1].offset), None)
        return decide([p for _, p in entries], stream.offset, stream.epoch, since, epoch, limit, page)

    def position(self, topic: str) -> tuple[int, str] | None:
        """The topic's latest offset and epoch; (0, "") if nothing was published in an epoch kept; None
        if the topic keeps no history."""
        stream = self._streams.get(topic)
        if stream is not None and stream.offset:
            return stream.offset, stream.epoch
        return (0, "") if self.policy.rule_for(topic) is not None else None

    @property
    def topics(self) -> int:
        return len(self._streams)

    def __len__(self) -> int:
        """Messages kept, over every topic."""
        return sum(len(s.entries) for s in self._streams.values())


def no_history(since: int | None) -> HistoryRead:
    """A topic that keeps none: without `since` an empty answer (its reason tells an edge that nothing
    published can be found again, rather than that nothing was published)."""
    return HistoryRead([], 0, "", since is None, "no history for this topic")


def take_page(publications: Iterable[Publication], page: PageLimits) -> tuple[list[Publication], bool]:
    """The first publications that fit in a page (at least one), and whether any were left out."""
    taken: list[Publication] = []
    size = 0
    for publication in publications:
        frame = len(publication.frame)
        if len(taken) >= page.max_count or (taken and size + frame > page.max_bytes):
            return taken, True
        taken.append(publication)
        size += frame
    return taken, False


def decide(entries: Sequence[Publication], offset: int, current_epoch: str, since: int | None, epoch: str,
           limit: int = 0, page: PageLimits | None = None) -> HistoryRead:
    """What a history read answers, from what is kept (`entries`, oldest first, within their bounds:
    all of them, or for a recovery those from the first after `since` on, or for the latest `limit`
    at least those, or a first page and one more) and the topic's position: the same for every engine.
    `limit` caps a recovery's page too."""
    page = page or PageLimits()
    if since is None:
        publications, truncated = take_page(entries[-limit:] if limit else entries, page)
        return HistoryRead(publications, offset, current_epoch, True, truncated=truncated)
    if epoch != current_epoch:
        return HistoryRead([], offset, current_epoch, False, "epoch changed")
    if since > offset:
        return HistoryRead([], offset, current_epoch, False, "ahead of the stream")
    oldest = entries[0].offset if entries else offset + 1
    if since + 1 < oldest:
        return HistoryRead([], offset, current_epoch, False, "too old")
    if limit:
        page = PageLimits(min(limit, page.max_count), page.max_bytes)
    publications, truncated = take_page((p for p in entries if p.offset > since), page)
    return HistoryRead(publications, offset, current_epoch, True, truncated=truncated)
