"""The hub joins the broker to edge streams: who wants which channel, and each edge's batching."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from common import tracing
from common.client_ids import routed_by_itself
from common.clock import call_at_reached
from common.interest import InterestTable
from common.topics import topic_error

from .broker import Broker
from .broker.base import BrokerUnavailable, PublishLane, Stopping
from .core.batching import BatchWindow
from .core.claims import ANONYMOUS_OWNER
from .core.history import HistoryRead, PageLimits
from .core.publication import (
    CLIENT_CHANNEL_PREFIX,
    COMMAND_CHANNEL,
    TOPIC_CHANNEL_PREFIX,
    Ack,
    Publication,
    client_channel,
    join_leave_channel,
    topic_channel,
)

if TYPE_CHECKING:
    from .presence import Roster

# A batch on an edge's stream closes at this many bytes of frames too: a response stays small (100
# deliveries of 64 KiB would be 6.4 MiB; the edge takes up to common.grpc_security.MAX_RECEIVE).
EDGE_BATCH_MAX_BYTES = 1 << 20

log = logging.getLogger("push_service.hub")


@dataclass(frozen=True, slots=True)
class Deliver:
    """A batch of publications for the edge."""

    batch: list[Publication]
    size: int = field(default=0, compare=False)  # bytes of frames, when it was queued (bookkeeping)


@dataclass(frozen=True, slots=True)
class Applied:
    """The edge's interest change `sequence` is in effect; `positions`: where the topics it added stood."""

    sequence: int
    positions: tuple[tuple[str, int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Resync:
    """The broker reconnected: the edge checks its topics' positions against history."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing else to say for `interval` seconds (and a stream's first event): this replica is alive.
    An edge that hears nothing for a few intervals takes the stream as lost (a paused or cut-off replica)."""

    interval: float


EdgeEvent = Deliver | Applied | Resync | Heartbeat


class EdgeTooSlow(Exception):
    """An edge stopped reading and its pending batches reached the limit; its stream is ended."""


class EdgeSession:
    """One edge's stream: publications in (sync, from routing), batches out (async iterator)."""

    def __init__(self, window: BatchWindow[Publication], max_pending_batches: int, name: str,
                 heartbeat_interval: float = 0.0, max_pending_deliveries: int = 0, max_pending_bytes: int = 0) -> None:
        self.name = name
        self.edge_id: str | None = None  # the edge's id, from its first request that carries one
        self.presence: Any = None  # what the stream declared (push_service/presence.EdgeMirror)
        self._heartbeat = heartbeat_interval  # 0: none
        self._window = window
        self._max_pending = max_pending_batches
        self._max_pending_deliveries = max_pending_deliveries  # 0: batches alone bound the queue
        self._pending_deliveries = 0  # in the batches of `_ready`
        # And their frames' bytes: a delivery keeps its frame alive after history let it go, so a
        # stuck edge's queue is bounded in memory too, not only in count (0: no byte bound).
        self._max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self._loop = asyncio.get_running_loop()
        # Batches to send, and interest-change sequences to acknowledge, in the order they happened.
        self._ready: deque[EdgeEvent] = deque()
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        # One timer for the heartbeats, armed at most twice an interval (not a timeout per wait: at a thousand
        # batches a second that was a tenth of the service's own CPU): when it fires, a heartbeat is due
        # if nothing was sent for a whole interval, else it is armed for an interval after the last send.
        self._sent_at = self._loop.time()
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._heartbeat_due = False
        self._closed = False
        self._overflowed = ""  # why the edge is cut off (it stopped reading), once it is
        self._idle = False  # the stream's writer waits with nothing to send

    def enqueue(self, publication: Publication) -> None:
        if self._closed:
            return
        batch = self._window.add(publication, self._loop.time(), len(publication.frame))
        if batch is not None:
            self._hand_over(batch)
        elif self._idle:
            # An idle stream sends at once: its writer takes the open batch when it next runs, with
            # whatever else this turn of the loop adds (all of one publish request), in one write.
            self._idle = False
            self._wake.set()
            return
        self._arm_timer()

    def close(self) -> None:
        self._closed = True
        for timer in (self._timer, self._heartbeat_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._heartbeat_timer = None
        self._wake.set()

    def drain(self) -> None:
        """Send what is pending at once, then end the stream (after the batches already queued)."""
        self._close_window()
        self.close()

    def request_resync(self) -> None:
        """Tell the edge (after what is queued) to check its topics' positions against history."""
        self._close_window()
        if not self._closed:  # (closed also when the open batch overflowed the queue)
            self._ready.append(Resync())
            self._idle = False
            self._wake.set()

    def acknowledge(self, sequence: int, positions: Sequence[tuple[str, int, str]] = ()) -> None:
        """An interest change is in effect; tell the edge after what is already queued."""
        self._close_window()
        if not self._closed:
            self._ready.append(Applied(sequence, tuple(positions)))
            self._idle = False
            self._wake.set()

    async def events(self) -> AsyncIterator[EdgeEvent]:
        """What to tell the edge, in the order it happened: batches, applied interest changes, resyncs;
        a heartbeat first, and after every interval with nothing else to send."""
        if self._heartbeat:
            yield Heartbeat(self._heartbeat)
            self._sent()
        while True:
            while self._ready and not self._overflowed:
                event = self._ready.popleft()
                if isinstance(event, Deliver):
                    self._pending_deliveries -= len(event.batch)
                    self._pending_bytes -= event.size
                yield event
                self._sent()
            if self._overflowed:
                raise EdgeTooSlow(self._overflowed)
            batch = self._window.take()  # everything before it is written: the open batch goes now
            if batch is not None:
                yield Deliver(batch)
                self._sent()
                continue
            if self._closed:
                return
            if self._heartbeat_due:
                yield Heartbeat(self._heartbeat)
                self._sent()
                continue
            self._idle = True
            self._wake.clear()
            await self._wake.wait()
            self._idle = False

    @property
    def heartbeat_interval(self) -> float:
        return self._heartbeat

    @property
    def queued(self) -> int:
        return len(self._ready)

    def _sent(self) -> None:
        """Something was written to the edge: the next heartbeat is due an interval from now (the timer
        armed for it, unless one is armed already: it looks again when it fires)."""
        self._sent_at = self._loop.time()
        if self._heartbeat and self._heartbeat_timer is None and not self._closed:
            self._heartbeat_due = False
            self._heartbeat_timer = call_at_reached(self._loop, self._sent_at + self._heartbeat, self._on_heartbeat)

    def _on_heartbeat(self, now: float) -> None:
        due = self._sent_at + self._heartbeat
        if now >= due:
            self._heartbeat_timer = None
            self._heartbeat_due = True
            self._wake.set()
        else:
            self._heartbeat_timer = call_at_reached(self._loop, due, self._on_heartbeat)

    def _arm_timer(self) -> None:
        deadline = self._window.deadline
        if deadline is not None and self._timer is None:
            self._timer = call_at_reached(self._loop, deadline, self._on_deadline)

    def _on_deadline(self, now: float) -> None:
        self._timer = None
        batch = self._window.flush_due(now)
        if batch is not None:
            self._hand_over(batch)
        self._arm_timer()

    def _close_window(self) -> None:
        """The open batch into the queue: what is said next (an applied change, a resync) follows
        the deliveries routed before it."""
        batch = None if self._closed else self._window.take()
        if batch is not None:
            self._hand_over(batch)

    def _hand_over(self, batch: list[Publication]) -> None:
        size = self._window.taken_bytes
        if len(self._ready) >= self._max_pending or (
                self._max_pending_deliveries and self._pending_deliveries + len(batch) > self._max_pending_deliveries) or (
                self._max_pending_bytes and self._pending_bytes + size > self._max_pending_bytes):
            self._overflowed = (f"edge {self.name} has {len(self._ready)} batches, {self._pending_deliveries} deliveries"
                                f" ({self._pending_bytes} bytes) unread")
            self._ready.clear()  # the stream ends unsent: what it held is freed now, not after the edge reads it
            self._pending_deliveries = self._pending_bytes = 0
            self.close()
            return
        self._pending_deliveries += len(batch)
        self._pending_bytes += size
        self._ready.append(Deliver(batch, size))
        self._idle = False
        self._wake.set()


class Hub:
    def __init__(
        self,
        broker: Broker,
        *,
        batch_max_size: int = 100,
        batch_interval: float = 0.1,
        max_pending_batches: int = 10_000,
        max_pending_deliveries: int = 100_000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        client_id_hold: float = 86_400.0,
        anonymous_client_id_hold: float = 60.0,
        edge_heartbeat_interval: float = 0.0,
    ) -> None:
        self._broker = broker
        self.roster: Roster | None = None  # presence, join/leave and occupancy (set by server.py)
        self._edge_heartbeat = edge_heartbeat_interval
        self._client_id_hold = client_id_hold
        # Anonymous connections have no identity to protect: their ids are held briefly, so that
        # nobody can fill the table (or Redis) by connecting with new ids, nor squat a user's for long.
        self._anonymous_hold = anonymous_client_id_hold
        self._refresher: asyncio.Task[None] | None = None
        self._batch_max_size = batch_max_size
        self._batch_interval = batch_interval
        self._max_pending = max_pending_batches
        self._max_pending_deliveries = max_pending_deliveries
        self._max_pending_bytes = max_pending_bytes
        self._interest: InterestTable[str, EdgeSession] = InterestTable()
        self._subscribing: dict[str, asyncio.Future[bool]] = {}  # channel -> its subscribe on its way
        self._sessions = 0
        self._open: set[EdgeSession] = set()
        # Stopping: publishes are refused from then on, and the edge streams drain only once those
        # already taken are published (routed to a drained stream, an answered message was lost).
        self._stopping = False
        self._publishing = 0
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def broker(self) -> Broker:
        return self._broker

    async def start(self) -> None:
        await self._broker.start(self._route, self._resync)
        self._refresher = asyncio.create_task(self._refresh_claims_forever(), name="client-id-holds")

    def _resync(self) -> None:
        for session in list(self._open):
            session.request_resync()
            if session.presence is not None:  # the broker may have lost what the edge declared (a Redis
                session.presence.dirty = True  # restarted empty): all of it again with its next request

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self._broker.close()

    # --- client ids a browser chose: bound to their owner across replicas (broker/base.py) -------

    async def claim_client_id(self, client_id: str, owner: str) -> bool:
        """Bind a chosen client_id to `owner` ("": anonymous); False if another owner holds it.
        Raises BrokerUnavailable."""
        hold = self._anonymous_hold if owner == ANONYMOUS_OWNER else self._client_id_hold
        return await self._broker.claim_client_id(client_id, owner, hold)

    def _chosen_client_ids(self, channels: Iterable[str]) -> list[str]:
        """The chosen client ids among these channels (not the edges' marks: assigned ids have no owner)."""
        return [c[len(CLIENT_CHANNEL_PREFIX):] for c in channels
                if c.startswith(CLIENT_CHANNEL_PREFIX) and routed_by_itself(c[len(CLIENT_CHANNEL_PREFIX):])]

    async def _refresh_claims(self, client_ids: list[str]) -> None:
        """The ids are in use (held by a connection, or were until now): their holds start over."""
        if not client_ids:
            return
        try:
            await self._broker.refresh_client_ids(client_ids, self._client_id_hold, self._anonymous_hold)
        except BrokerUnavailable as exc:
            log.warning("holds of %d client ids not refreshed: %s", len(client_ids), exc)

    async def _refresh_claims_forever(self) -> None:
        """While connections hold their chosen ids, the ids' holds are kept from running out."""
        while True:
            await asyncio.sleep(min(self._client_id_hold, self._anonymous_hold) / 4)
            try:
                await self._refresh_claims(self._chosen_client_ids(self._interest.keys()))
            except Exception:
                log.exception("refreshing client id holds failed")

    async def stop_publishing(self, timeout: float) -> None:
        """Refuse publishes from now on (UNAVAILABLE: the publisher sends them again, to another replica
        or to this one restarted), and wait up to `timeout` for those already taken to be published."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            log.warning("%d publishes still in progress after %.1fs; draining the edge streams", self._publishing, timeout)

    def drain(self) -> None:
        for session in list(self._open):
            session.drain()

    def _refuse_if_stopping(self) -> None:
        if self._stopping:
            raise Stopping()

    def _taken(self) -> None:
        self._publishing += 1
        self._settled.clear()

    def _published(self, _: object = None) -> None:
        self._publishing -= 1
        if not self._publishing:
            self._settled.set()

    async def publish(self, publication: Publication, idempotency_key: str = "") -> Ack:
        self._refuse_if_stopping()
        self._taken()
        try:
            return await self._broker.publish(publication, idempotency_key)
        finally:
            self._published()

    def lane(self) -> StoppableLane:
        """A publishing stream's order (the broker's lane keeps it while pipelining)."""
        return StoppableLane(self, self._broker.lane())

    async def signal(self, publication: Publication) -> bool:
        """A control publication to the edge holding its session (any replica): whether one was reached."""
        self._refuse_if_stopping()
        self._taken()
        try:
            return await self._broker.signal(publication)
        finally:
            self._published()

    async def history(self, topic: str, since: int | None, epoch: str, limit: int = 0,
                      page: PageLimits | None = None) -> HistoryRead:
        return await self._broker.history(topic, since, epoch, limit, page)

    def stats(self) -> dict[str, int]:
        channels = list(self._interest.keys())
        return {
            "edge_streams": len(self._open),
            "channels": len(channels),
            "topics": sum(1 for c in channels if c.startswith(TOPIC_CHANNEL_PREFIX)),
            "edge_queue_batches": sum(s.queued for s in self._open),
        }

    def open_session(self, peer: str) -> EdgeSession:
        self._sessions += 1
        window: BatchWindow[Publication] = BatchWindow(self._batch_max_size, self._batch_interval, EDGE_BATCH_MAX_BYTES)
        session = EdgeSession(window, self._max_pending, name=f"{self._sessions}@{peer}",
                              heartbeat_interval=self._edge_heartbeat,
                              max_pending_deliveries=self._max_pending_deliveries,
                              max_pending_bytes=self._max_pending_bytes)
        self._open.add(session)
        return session

    async def route_commands(self, session: EdgeSession) -> None:
        """Every edge stream receives the server API's commands (whichever replica they reach)."""
        await self._subscribe(session, [COMMAND_CHANNEL])

    async def close_session(self, session: EdgeSession) -> None:
        session_channels = list(self._interest.keys_of(session))
        session.close()
        self._open.discard(session)
        await self._broker.unsubscribe(*self._interest.remove_subscriber(session))
        # Its edge is gone: the hold of its chosen ids counts from now.
        await self._refresh_claims(self._chosen_client_ids(session_channels))

    async def change_interest(
        self,
        session: EdgeSession,
        *,
        add_topics: Iterable[str] = (),
        remove_topics: Iterable[str] = (),
        add_client_ids: Iterable[str] = (),
        remove_client_ids: Iterable[str] = (),
        add_join_leave: Iterable[str] = (),
        remove_join_leave: Iterable[str] = (),
        positions: Collection[str] = (),
    ) -> list[tuple[str, int, str]]:
        """Applies an edge's interest change; returns where each added topic in `positions` that has
        history stands now (topic, offset, epoch;
        offset 0 and no epoch: nothing published in a kept epoch), read after this replica routes it to
        the edge: a publication the edge gets from here on comes after that position, or is one the
        read saw."""
        added_topics = []
        for topic in add_topics:
            if (why := topic_error(topic)) is not None:
                log.warning("edge %s declared an invalid topic, ignored: %s", session.name, why)
                continue
            added_topics.append(topic)
        # The engine hears of a channel's first and last local interest only, all of a request's at
        # once (one round trip to Redis for a burst of browsers' personal channels).
        added = [*map(topic_channel, added_topics), *map(client_channel, add_client_ids),
                 *(join_leave_channel(t) for t in add_join_leave if topic_error(t) is None)]
        await self._subscribe(session, added)
        removed = [*map(topic_channel, remove_topics), *map(client_channel, remove_client_ids),
                   *map(join_leave_channel, remove_join_leave)]
        await self._broker.unsubscribe(*(c for c in removed if self._interest.remove(c, session)))
        # The last connection holding each of them left that edge: the hold counts from now.
        await self._refresh_claims(self._chosen_client_ids(removed))
        # A new subscriber gets the topic's current state at once (e.g. the task list).
        for topic in added_topics:
            retained = await self._broker.retained(topic)
            if retained is not None:
                session.enqueue(replace(retained, replay=True))
        asked = [topic for topic in added_topics if topic in positions]
        return await self._positions(asked) if asked else []

    async def _subscribe(self, session: EdgeSession, channels: list[str]) -> None:
        """The session's interest in `channels`, in effect when this returns: the broker subscribes the
        first interests, and a channel whose subscribe another session started is waited for (with
        Redis, until it confirmed; answered before, the edge would miss what is published meanwhile)."""
        first = [c for c in channels if self._interest.add(c, session)]
        waits = {c: f for c in channels if (f := self._subscribing.get(c)) is not None}  # before this one's own
        if first:
            await self._broker_subscribe(first)
        if waits:
            # `wait`, not `gather`: this session's stream may end meanwhile (this change cancelled), and
            # that must not cancel a subscribe that belongs to another session and that others wait for.
            await asyncio.wait(set(waits.values()))
            # A subscribe cut short (its session's stream ended before the broker applied it): the
            # channels are this session's now, and subscribed for it (a broker's subscribe is idempotent).
            if cut_short := [c for c, f in waits.items() if not f.result()]:
                await self._broker_subscribe(cut_short)

    async def _broker_subscribe(self, channels: list[str]) -> None:
        applied = asyncio.get_running_loop().create_future()  # its result: whether the broker applied it
        for channel in channels:
            self._subscribing[channel] = applied
        done = False
        try:
            await self._broker.subscribe(*channels)
            done = True
        finally:
            for channel in channels:
                if self._subscribing.get(channel) is applied:
                    del self._subscribing[channel]
            applied.set_result(done)

    async def _positions(self, topics: list[str]) -> list[tuple[str, int, str]]:
        """Each topic's latest offset and epoch, for the topics that keep history: (0, "") for one with
        nothing published in an epoch still kept (its first publication begins one)."""
        try:
            read = await self._broker.positions(topics)
        except BrokerUnavailable as exc:  # the edge goes on without them, as before positions were told
            log.warning("positions of %d topics not read: %s", len(topics), exc)
            return []
        return [(topic, *position) for topic, position in zip(topics, read, strict=True) if position is not None]

    def _route(self, publication: Publication) -> None:
        if publication.traceparent and tracing.ENABLED:
            self._route_traced(publication)
            return
        for session in self._interest.subscribers(publication.channel):
            session.enqueue(publication)

    def _route_traced(self, publication: Publication) -> None:
        """A sampled message's fan-out to this replica's edge streams, as a span (the child of its
        publish span, perhaps on another replica): the edges' delivery spans are its children."""
        sessions = list(self._interest.subscribers(publication.channel))
        with tracing.start_span("push.fan_out", parent=publication.traceparent, kind=tracing.SpanKind.PRODUCER,
                                attributes={"messaging.destination.name": publication.topic,
                                            "push.edge_streams": len(sessions)}) as span:
            publication = replace(publication, traceparent=tracing.traceparent(span))
            for session in sessions:
                session.enqueue(publication)


class StoppableLane:
    """A publishing stream's lane (`publish_many` of the broker's) that the hub's stop refuses from then
    on (each later message UNAVAILABLE, as after a broker's refusal), and whose requests the stop waits
    for."""

    def __init__(self, hub: Hub, lane: PublishLane) -> None:
        self._hub = hub
        self._lane = lane

    def publish_many(self, items: Sequence[tuple[Publication, str]]) -> Awaitable[list[Ack | BrokerUnavailable]]:
        if self._hub._stopping:
            # Refused from here on, as after a broker's refusal (so nothing later is published either).
            self._lane.refused = self._lane.refused or str(Stopping())
            return _ready([Stopping()] * len(items))
        outcomes = asyncio.ensure_future(self._lane.publish_many(items))
        if not outcomes.done():
            self._hub._taken()
            outcomes.add_done_callback(self._hub._published)
        return outcomes


def _ready(result: list[Ack | BrokerUnavailable]) -> asyncio.Future[list[Ack | BrokerUnavailable]]:
    done: asyncio.Future[list[Ack | BrokerUnavailable]] = asyncio.get_running_loop().create_future()
    done.set_result(result)
    return done
