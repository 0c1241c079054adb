"""The embedded engine: one process, no network. Delivery is a direct call."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence

from ..core.claims import ClientIdClaims
from ..core.history import HistoryPolicy, HistoryRead, HistoryStore, PageLimits
from ..core.idempotency import IdempotencyCache
from ..core.publication import Ack, Publication
from .base import Broker, BrokerUnavailable, PublicationHandler, PublishLane, ReconnectHandler
from .presence import MemoryPresence

# How long a topic's retained state is kept after it was published, as the Redis engines keep it: a
# topic's last state outlives its history, but not for ever (one state per task, room or entity,
# published once, would otherwise be kept as long as the process lives).
RETAINED_SECONDS = 24 * 3600.0


class MemoryBroker(Broker):
    def __init__(self, history: HistoryPolicy | None = None, idempotency: IdempotencyCache | None = None,
                 sweep_interval: float = 1.0, presence_max_clients: int = 1000,
                 retained_ttl: float = RETAINED_SECONDS) -> None:
        self.presence = MemoryPresence(presence_max_clients)
        self._idempotency = idempotency or IdempotencyCache()
        self._handler: PublicationHandler | None = None
        self._channels: set[str] = set()
        self._retained: OrderedDict[str, tuple[float, Publication]] = OrderedDict()  # oldest first
        self._retained_ttl = retained_ttl
        self._claims = ClientIdClaims()
        # One life of this process is one epoch: after a restart, old positions are refused.
        self._history = HistoryStore(history or HistoryPolicy(), epoch=uuid.uuid4().hex[:12])
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, on_publication: PublicationHandler, on_reconnect: ReconnectHandler | None = None) -> None:
        self._handler = on_publication
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="history-sweep")

    async def _sweep_forever(self) -> None:
        """Idle topics and old keys go by themselves, not only when they are touched again."""
        while True:
            await asyncio.sleep(self._sweep_interval)
            now = time.monotonic()
            self._history.sweep(now)
            self._idempotency.expire(now)
            self._expire_retained(now)

    def _expire_retained(self, now: float) -> None:
        while self._retained:
            topic, (published, _) = next(iter(self._retained.items()))
            if now - published < self._retained_ttl:
                break
            del self._retained[topic]

    async def publish(self, publication: Publication, idempotency_key: str = "") -> Ack:
        return self.publish_now(publication, idempotency_key)

    def publish_now(self, publication: Publication, idempotency_key: str = "") -> Ack:
        """`publish`, done before it returns: nothing here waits for anything."""
        now = time.monotonic()
        if idempotency_key:
            idempotency_key = publication.idempotency_key(idempotency_key)  # a topic's own
            first = self._idempotency.get(idempotency_key, now)
            if first is not None:
                return first
        publication = self._history.append(publication, now)
        if idempotency_key:
            self._idempotency.remember(idempotency_key, publication.ack, now)
        if publication.retain:
            self._retained[publication.topic] = (now, publication)
            self._retained.move_to_end(publication.topic)
        if self._handler is not None and publication.channel in self._channels:
            self._handler(publication)
        return publication.ack

    def lane(self) -> PublishLane:
        return ImmediateLane(self)

    async def signal(self, publication: Publication) -> bool:
        if self._handler is None or publication.channel not in self._channels:
            return False
        self._handler(publication)
        return True

    async def history(self, topic: str, since: int | None, epoch: str, limit: int = 0,
                      page: PageLimits | None = None) -> HistoryRead:
        return self._history.read(topic, since, epoch, time.monotonic(), limit, page)

    async def position(self, topic: str) -> tuple[int, str] | None:
        return self._history.position(topic)

    async def subscribe(self, *channels: str) -> None:
        self._channels.update(channels)

    async def unsubscribe(self, *channels: str) -> None:
        self._channels.difference_update(channels)

    async def retained(self, topic: str) -> Publication | None:
        kept = self._retained.get(topic)
        return kept[1] if kept is not None and time.monotonic() - kept[0] < self._retained_ttl else None

    async def claim_client_id(self, client_id: str, owner: str, hold: float) -> bool:
        return self._claims.claim(client_id, owner, time.monotonic(), hold)

    async def refresh_client_ids(self, client_ids: Sequence[str], hold: float, anonymous_hold: float) -> None:
        self._claims.refresh(list(client_ids), time.monotonic(), hold, anonymous_hold)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._handler = None
        self._channels.clear()


class ImmediateLane(PublishLane):
    """A publishing stream's lane on the memory engine: each request is published when it is handed
    over, in the order of the calls, and its acks are ready at once. The default lane would start a
    task per request and wait a turn of the loop for the one before it: at a thousand one-message
    requests a second, that was a third of the service's own Python time."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self._publish_now = broker.publish_now

    def publish_many(self, items: Sequence[tuple[Publication, str]]) -> asyncio.Future[list[Ack | BrokerUnavailable]]:
        done: asyncio.Future[list[Ack | BrokerUnavailable]] = asyncio.get_running_loop().create_future()
        done.set_result([self._publish_now(publication, key) for publication, key in items])
        return done
