"""The broker contract, written before its engines.

Guarantees every engine gives:
- `publish` hands a publication to every replica subscribed to its channel (this one included),
  at most once, in publish order per channel; it returns once the engine has accepted it and raises
  `BrokerUnavailable` when it cannot. (The memory and single-Redis engines also keep the order across
  channels; on a Redis Cluster, channels on different shards arrive over different connections.)
- A retained publication (`retain=True`) replaces the topic's retained state atomically with its
  publish; `retained(topic)` returns the latest one.
- `subscribe` / `unsubscribe` are called by the hub on the first / last local interest in channels
  (topic channels `t:<topic>`, personal channels `c:<client_id>`), never per edge or per browser;
  `subscribe` returns once what is published to them next is delivered.

- Idempotency: a key seen within the window is not published again (checked atomically); the
  repeat is answered with the first publication's `Ack` (id, timestamp, position), and only that is
  kept per key, never the message.
- History: `publish` adds the publication to its topic's history (if the topic keeps one) and
  answers with its position `{offset, epoch}`, atomically with delivering it; `history` reads what
  came after a position, or says why it cannot, one page at a time (`PageLimits`: at most so many
  messages and bytes of frames, at least one message; `truncated` when more remain: read again from
  the page's last offset). A topic's history is bounded by its rule's count and age and by
  `HistoryPolicy.topic_bytes` of frames; a topic idle past its age is forgotten, and when it is
  published to again it starts a new epoch.
- Every operation that needs the engine's backing store raises `BrokerUnavailable` when it is away
  (never an engine-specific error).
- Publishing lanes (`lane()`): a publishing stream's messages, handed over in order without waiting
  for each other's answers, are published in that order; once one of them is refused, none handed
  over after it is published (each is refused), so a publisher that sends again from the refused
  one keeps its order. An engine may have many of a lane's messages (and concurrent `publish` calls)
  on their way to its store at once.
- Client id claims: `claim_client_id` binds a client_id a browser chose to its owner (a user id, or
  "" for anonymous connections) until `hold` seconds after its last claim or refresh, atomically
  across replicas: while bound, another owner's claim is refused. `refresh_client_ids` starts the
  hold of bound ids over and binds nothing.
- Signals: `signal` hands a control publication (client frames for an edge's HTTP-transport session)
  to the replicas subscribed to its channel now, at most once, with no history, retention or
  idempotency; it answers whether any replica was subscribed.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..core.history import HistoryRead, PageLimits
from ..core.publication import Ack, Publication

if TYPE_CHECKING:
    from .presence import PresenceStore

PublicationHandler = Callable[[Publication], None]
ReconnectHandler = Callable[[], None]


class BrokerUnavailable(Exception):
    """The engine cannot take or deliver publications now; publishers get UNAVAILABLE and retry."""


class Stopping(BrokerUnavailable):
    """The service is stopping: publishers get UNAVAILABLE and send again (to another replica, or to
    this one restarted)."""

    def __init__(self) -> None:
        super().__init__("the push service is stopping")


def unavailable_message(exc: BrokerUnavailable) -> str:
    """What a refused caller is told."""
    return str(exc) if isinstance(exc, Stopping) else f"broker unavailable: {exc}"


class EngineEvents:
    """What an engine tells about its backing store, for whoever counts it (the service's metrics are
    given to the engine at start-up; the engine imports no service module). Does nothing by default."""

    def failed(self, operation: str) -> None:
        """An operation on the backing store failed (`publish`, `history`, `subscriber`, ...)."""

    def reconnected(self) -> None:
        """The engine's subscription to its store came back after an interruption."""


class PublishLane:
    """One publishing stream's order. `publish_many` takes its place in the order when it is called
    and returns an awaitable of the acks (or BrokerUnavailable); after a refusal everything later is
    refused. This default publishes one call after the other, each in a task of its own; an engine with
    a round trip to save overrides it to send them without waiting (the Redis engines), and one with
    nothing to wait for publishes at once (the memory engine's `ImmediateLane`)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._previous: asyncio.Future[list[Ack | BrokerUnavailable]] | None = None
        self.refused: str | None = None  # why the first refused message was refused

    def publish_many(self, items: Sequence[tuple[Publication, str]]) -> Awaitable[list[Ack | BrokerUnavailable]]:
        """Each message's ack, or its refusal (BrokerUnavailable), in order."""
        previous = self._previous

        async def publish() -> list[Ack | BrokerUnavailable]:
            if previous is not None:
                await asyncio.wait([previous])
            if self.refused is None:
                try:
                    return list(await self._broker.publish_many(items))
                except BrokerUnavailable as exc:  # some may have been published: the retry's keys tell
                    self.refused = str(exc)
                    return [exc] * len(items)
            return [self._refusal()] * len(items)

        self._previous = asyncio.ensure_future(publish())
        return self._previous

    def _refusal(self) -> BrokerUnavailable:
        return BrokerUnavailable(f"{self.refused} (an earlier message of this stream was refused)")


class Broker(abc.ABC):
    presence: PresenceStore  # where presence, occupancy and the nodes' reports are kept (broker/presence.py)

    @abc.abstractmethod
    async def start(self, on_publication: PublicationHandler, on_reconnect: ReconnectHandler | None = None) -> None:
        """Begin delivering publications of subscribed channels to `on_publication`; `on_reconnect`
        is called when delivery resumes after an interruption (publications may have been missed)."""

    @abc.abstractmethod
    async def publish(self, publication: Publication, idempotency_key: str = "") -> Ack:
        """Publish; with a key seen within the idempotency window, publish nothing and return the
        ack of that key's first publication (atomically with the check, across replicas)."""

    async def publish_many(self, items: Sequence[tuple[Publication, str]]) -> list[Ack]:
        """Publish (publication, idempotency key) pairs in order, as one publishing-stream request
        brings them. An engine may send them in one round trip; if it raises BrokerUnavailable, some
        may have been published (their idempotency keys make the retry safe)."""
        return [await self.publish(publication, key) for publication, key in items]

    def lane(self) -> PublishLane:
        """A publishing stream's lane (see the module docstring)."""
        return PublishLane(self)

    @abc.abstractmethod
    async def history(self, topic: str, since: int | None, epoch: str, limit: int = 0,
                      page: PageLimits | None = None) -> HistoryRead:
        """After `since` in `epoch` (recovery), or the latest `limit` messages (all kept: 0) when
        `since` is None: the first page of it (`page`, default `PageLimits()`)."""

    async def position(self, topic: str) -> tuple[int, str] | None:
        """The topic's latest offset and epoch; (0, "") when it keeps history but nothing was published
        in an epoch still kept (a topic never published has no epoch yet); None when it keeps no
        history, or this engine cannot tell. Raises BrokerUnavailable."""
        latest = await self.history(topic, None, "", 1)
        return (latest.offset, latest.epoch) if latest.offset and latest.epoch else None

    async def positions(self, topics: list[str]) -> list[tuple[int, str] | None]:
        """`position` of each topic, in order; an engine behind a network reads them in one round trip.
        Raises BrokerUnavailable."""
        return [await self.position(topic) for topic in topics]

    @abc.abstractmethod
    async def subscribe(self, *channels: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, *channels: str) -> None: ...

    @abc.abstractmethod
    async def retained(self, topic: str) -> Publication | None: ...

    @abc.abstractmethod
    async def claim_client_id(self, client_id: str, owner: str, hold: float) -> bool:
        """Bind `client_id` to `owner` for `hold` seconds (again: the hold starts over), unless
        another owner holds it; True when bound. Raises BrokerUnavailable."""

    @abc.abstractmethod
    async def refresh_client_ids(self, client_ids: Sequence[str], hold: float, anonymous_hold: float) -> None:
        """The hold of each of these ids that is bound starts over. Raises BrokerUnavailable."""

    @abc.abstractmethod
    async def signal(self, publication: Publication) -> bool:
        """Deliver `publication` to the channel's current subscribers only (no history); True when
        any replica was subscribed. Raises BrokerUnavailable."""

    @abc.abstractmethod
    async def close(self) -> None: ...
