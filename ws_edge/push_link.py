"""The edge's one gRPC stream to the push service: interest up, batches down, reconnect with backoff.

Browsers never notice a drop: the link reconnects by itself and re-declares the edge's whole interest
(a snapshot taken at reconnect time), so changes made while it was down are not lost.

A replica that stops answering (paused, cut off by a partition that drops packets without a reset)
does not break the connection; gRPC keepalive notices late or never. The push service sends a
heartbeat whenever it has been quiet for its interval, so a stream silent for `silence_timeout` is
taken as lost: the link opens it again on the next replica of the list (EDGE_PUSH_ADDRESS may name
several, each with a channel of its own), and the edge fills the gap from the shared history. A silence
that the edge's own process partly slept through (stopped, starved of CPU) gets one more limit: what
the replica sent meanwhile may be waiting unread (`_watched`). The
link's unary calls (history, publish, client id claims) go to the replica of the live stream, or,
while there is none, to the one the next stream will try: the replica last heard from.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc
from push.v1 import server_api_pb2_grpc as api_grpc

from common.backoff import Backoff
from common.grpc_security import MAX_RECEIVE
from common.reconnect import reconnect_forever

log = logging.getLogger("ws_edge.push_link")

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    *MAX_RECEIVE,
]

# Interest changes go to the push service at most this often (the first after a quiet spell at once):
# a burst of connections then costs one request per interval instead of about one per connection,
# each a gRPC write here and an apply there (measured on 3 x 2,000 connections: the edge's CPU -28 %,
# the push service's -80 %, connect time 0.52 -> 0.36 ms each; docs/PERFORMANCE.md).
INTEREST_FLUSH_INTERVAL = 0.005
UNARY_TIMEOUT = 5.0
SILENCE_TIMEOUT = 3.0
# The watchdog's timer woke more than this after it was due: this process was not running meanwhile (a
# loop round of the busiest edge takes tens of milliseconds).
STALL = 0.25
MOVE_WAIT = 0.5  # how long a read refused as unavailable waits for the link to move (its replica went away)


class StreamSilent(Exception):
    """The push service said nothing (not even a heartbeat) for longer than the link waits."""
DeliveriesHandler = Callable[[Sequence[pb.Delivery]], None]
SnapshotSource = Callable[[], tuple[list[str], list[str], list[str]]]  # topics, client ids, topics to position


class StreamEvents(Protocol):
    """What the stream tells the edge's deliveries (ws_edge/delivery.py DeliveryPump), beside them."""

    def on_lost(self) -> None:
        """The stream went down, after having been up."""

    def on_restored(self) -> None:
        """It is back, with the edge's whole interest declared again."""

    def on_resync(self) -> None:
        """The push service's broker reconnected: publications may have passed it by."""

    def on_positions(self, positions: dict[str, tuple[int, str]]) -> None:
        """Where the topics of an applied interest change stood (push.v1 TopicPosition)."""


class StreamExtras(Protocol):
    """What the stream carries beside interest (presence, issue 15; ws_edge/presence.py)."""

    edge_id: str

    def on_rules(self, rules: str) -> None: ...

    def fill_snapshot(self, request: pb.EdgeStreamRequest) -> None: ...

    def report(self) -> pb.EdgeReport: ...


class PushLink:
    _report_interval: float | None = None  # told by the push service (presence TTL / 3)
    _reporter: asyncio.Task[None] | None = None  # sends the edge's report every interval (extras)

    def __init__(
        self,
        address: str,
        channel_factory: Callable[[str], grpc.aio.Channel],
        on_deliveries: DeliveriesHandler,
        snapshot: SnapshotSource,
        *,
        reconnect_max: float = 5.0,
        flush_interval: float = INTEREST_FLUSH_INTERVAL,
        events: StreamEvents | None = None,
        silence_timeout: float = SILENCE_TIMEOUT,
        extras: StreamExtras | None = None,
    ) -> None:
        self.address, self._extras = address, extras
        self._presence: dict[tuple[str, str], pb.PresenceChange] = {}  # (topic, client id) -> latest change
        # One channel per replica named (one name that resolves to several: one channel balancing them).
        self.replicas = [part.strip() for part in address.split(",") if part.strip()] or [address]
        self._current = 0  # the replica the stream is on, or tries next
        self._channel_factory = channel_factory
        self._silence = silence_timeout
        self._heard = 0.0  # loop time of the stream's last response
        self.silences = 0  # streams given up for silence
        self._limit: float | None = silence_timeout  # None: the replica sends no heartbeats
        self._beating = False  # this stream's replica has sent a heartbeat
        self._on_deliveries = on_deliveries
        self._snapshot = snapshot
        self._backoff = Backoff(initial=0.1, maximum=reconnect_max)
        self._flush_interval = flush_interval
        # The channel is made in start(): gRPC binds it to the running event loop.
        self._channels: list[grpc.aio.Channel | None] = [None] * len(self.replicas)
        self._stubs: list[pb_grpc.PushServiceStub | None] = [None] * len(self.replicas)
        self._api_stubs: list[api_grpc.ServerApiStub | None] = [None] * len(self.replicas)
        self._changes: asyncio.Queue[pb.EdgeStreamRequest] | None = None
        # Interest changes not yet confirmed by the push service, oldest first: (sequence, future).
        self._sequence = 0
        self._unconfirmed: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._pending: dict[tuple[str, str], bool] = {}  # (kind, key) -> add? ; sent by the scheduled flush
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = 0.0
        self._batch_open = False  # the newest sequence still collects changes (not sent yet)
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._moved: asyncio.Future[None] | None = None  # done when the link moves to the next replica
        self._closed = False
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._events = events
        self._was_up = False

    @property
    def stub(self) -> pb_grpc.PushServiceStub:
        """For unary calls (e.g. `send_message` publishing): the channel of the replica the stream is on
        (answering: it sends heartbeats), or will try next."""
        stub = self._stubs[self._current]
        assert stub is not None, "PushLink.start() first"
        return stub

    @property
    def replica(self) -> str:
        """The replica the stream is on (or tries next)."""
        return self.replicas[self._current]

    def _open_channel(self, index: int) -> None:
        channel = self._channel_factory(self.replicas[index])
        self._channels[index] = channel
        self._stubs[index] = pb_grpc.PushServiceStub(channel)
        self._api_stubs[index] = api_grpc.ServerApiStub(channel)

    def _next_replica(self, silent: bool) -> None:
        """After a lost stream: the next replica. A silent one's channel is replaced (its connection may
        hang, not fail: a replica behind one name, or this one once it answers again, gets a fresh one)."""
        if silent:
            old = self._channels[self._current]
            self._open_channel(self._current)
            if old is not None:
                # With a grace past the unary deadline: a call still on it (a publish, a client id's
                # claim; a history read is moved by `_unless_moved` itself) ends with its own deadline's
                # error, which its caller answers. Closed at once, the channel would cancel it, and the
                # CancelledError would end the caller's task unanswered.
                task = asyncio.create_task(old.close(grace=UNARY_TIMEOUT + 1), name="close-silent-channel")
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self._current = (self._current + 1) % len(self.replicas)
        if self._moved is not None and not self._closed:
            self._moved.set_result(None)
            self._moved = None

    # --- unary calls on the link's channel ---------------------------------------------------

    async def history(self, topic: str, since: tuple[int, str] | None, max_bytes: int = 1 << 20,
                      latest: int = 0) -> pb.HistoryResponse:
        """`topic`'s history after `since` (None: the latest `latest` it keeps, 0: all), every page of it (the push
        service answers at most a page at a time, `truncated` when more remain) up to `max_bytes` of
        frames: past that, not recovered ("too far behind": more than a client's send queue holds, and
        the edge would hold it all meanwhile); not recovered, with no epoch, when the push service
        cannot answer. A read still out when the link moves to the next replica (the last one given up,
        perhaps for its silence: the call would only wait out its deadline) is read again there at once."""
        try:
            answer = await self._unless_moved(topic, since, max_bytes, latest)
            if answer is None:
                log.info("history of %s: read again on %s, the replica the link moved to", topic, self.replica)
                answer = await self._read_history(topic, since, max_bytes, latest)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError) as exc:  # (UsageError: its channel closed)
            log.warning("history of %s unavailable: %s", topic, exc)
            return pb.HistoryResponse(recovered=False, reason="history unavailable")
        except asyncio.CancelledError:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise  # the caller is cancelled
            # Its call was, with its channel (the link closing): answered, not left to end the caller.
            return pb.HistoryResponse(recovered=False, reason="history unavailable")
        return answer

    async def _unless_moved(self, topic: str, since: tuple[int, str] | None, max_bytes: int,
                            latest: int) -> pb.HistoryResponse | None:
        """The read, or None when the link moves to the next replica first (or as it fails): then the
        read is dropped. A read has no effect, so reading again is safe. A replica that went away fails
        the read and the stream at about the same time: a read refused as unavailable waits a moment
        for the link to move."""
        if self._moved is None:
            self._moved = asyncio.get_running_loop().create_future()
        moved = self._moved
        reading = asyncio.ensure_future(self._read_history(topic, since, max_bytes, latest))
        try:
            await asyncio.wait((reading, moved), return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():  # moved
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)  # its call cancelled
                return None
            failure = None if reading.cancelled() else reading.exception()
            if isinstance(failure, grpc.aio.AioRpcError) and failure.code() == grpc.StatusCode.UNAVAILABLE:
                await asyncio.wait((moved,), timeout=MOVE_WAIT)
        except BaseException:  # the caller is cancelled: the read's outcome is nobody's
            reading.cancel()
            reading.add_done_callback(lambda task: task.cancelled() or task.exception())
            raise
        return None if moved.done() and failure is not None else reading.result()

    async def _read_history(self, topic: str, since: tuple[int, str] | None, max_bytes: int,
                            latest: int) -> pb.HistoryResponse:
        if since is None:
            return await self.stub.History(pb.HistoryRequest(topic=topic, limit=latest), timeout=UNARY_TIMEOUT)
        answer = await self._history_page(topic, since)
        whole = list(answer.publications)
        size = sum(len(p.frame) for p in whole)
        while answer.truncated and answer.recovered and whole:
            if size > max_bytes:
                return pb.HistoryResponse(offset=answer.offset, epoch=answer.epoch, recovered=False,
                                          reason="too far behind")
            answer = await self._history_page(topic, (whole[-1].offset, since[1]))
            if not answer.recovered or answer.epoch != since[1]:
                return answer  # the topic moved on meanwhile (a new epoch, trimmed): not recovered
            whole.extend(answer.publications)
            size += sum(len(p.frame) for p in answer.publications)
        return pb.HistoryResponse(publications=whole, offset=answer.offset, epoch=answer.epoch,
                                  recovered=answer.recovered, reason=answer.reason)

    async def _history_page(self, topic: str, since: tuple[int, str]) -> pb.HistoryResponse:
        request = pb.HistoryRequest(topic=topic, since_offset=since[0], epoch=since[1])
        return await self.stub.History(request, timeout=UNARY_TIMEOUT)

    async def publish(self, topic: str, type_: str, data: bytes) -> str:
        """Publish one message; its id. Raises grpc.aio.AioRpcError."""
        message = pb.OutgoingMessage(topic=topic, type=type_, data=data)
        return (await self.stub.Publish(pb.PublishRequest(message=message), timeout=UNARY_TIMEOUT)).id

    async def claim_client_id(self, client_id: str, user: str | None) -> bool | None:
        """A chosen client_id belongs to the user who first took it on any edge, until the push
        service's hold runs out after its last use: True if `user` may use it, False if another
        holds it, None when the push service cannot be asked."""
        request = pb.ClaimClientIdRequest(client_id=client_id)
        if user is not None:
            request.user = user
        try:
            return (await self.stub.ClaimClientId(request, timeout=UNARY_TIMEOUT)).granted
        except grpc.aio.AioRpcError as exc:
            log.warning("client_id %r not checked: %s %s", client_id, exc.code().name, exc.details())
            return None

    async def server_api(self, method: str, request: object) -> object:
        """A push.v1.ServerApi call on the link's channel (e.g. a browser's `presence` read). Raises
        grpc.aio.AioRpcError."""
        stub = self._api_stubs[self._current]
        assert stub is not None, "PushLink.start() first"
        return await getattr(stub, method)(request, timeout=UNARY_TIMEOUT)

    async def emulate(self, session_id: str, frames: list[str]) -> bool | None:
        """Client frames for a stream session held by another edge (the push service routes them by
        the session id's mark): whether an edge was reached, None when the push service cannot be asked."""
        try:
            reply = await self.stub.Emulate(pb.EmulateRequest(session_id=session_id, frames=frames),
                                            timeout=UNARY_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.warning("emulation for session %s not forwarded: %s %s", session_id[:13], exc.code().name,
                        exc.details())
            return None
        return reply.delivered

    def start(self) -> None:
        for index in range(len(self.replicas)):
            self._open_channel(index)
        self._task = asyncio.create_task(self._run(), name="push-link")
        if self._extras is not None:
            self._reporter = asyncio.create_task(self._report_forever(), name="edge-report")

    async def _report_forever(self) -> None:
        """The edge's report every interval the push service asked for: it proves the edge alive (its
        clients stay in presence) and carries its figures (the server API's Info and Channels)."""
        assert self._extras is not None
        while True:
            await asyncio.sleep(self._report_interval or 0.5)
            if self._report_interval and self._changes is not None and self.connected.is_set():
                self._changes.put_nowait(pb.EdgeStreamRequest(edge_id=self._extras.edge_id,
                                                              report=self._extras.report()))

    async def close(self) -> None:
        self._closed = True  # its reads are not read again elsewhere: their channels close below
        for task in (self._task, self._reporter):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
        for channel in self._channels:
            if channel is not None:
                await channel.close()

    def change(
        self,
        *,
        add_topics: Sequence[str] = (),
        remove_topics: Sequence[str] = (),
        add_client_ids: Sequence[str] = (),
        remove_client_ids: Sequence[str] = (),
        add_join_leave: Sequence[str] = (),
        remove_join_leave: Sequence[str] = (),
        add_users: Sequence[str] = (),
        remove_users: Sequence[str] = (),
        presence: Sequence[pb.PresenceChange] = (),
    ) -> asyncio.Future[None]:
        """Forward an interest change; the future resolves once the push service has applied it.

        While disconnected nothing is sent: the snapshot declared on reconnect covers the change,
        and its confirmation resolves the future. Changes that travel in one request share one
        sequence and one future (a burst of connections waits on one future, not one each)."""
        if not self._batch_open:
            self._next_sequence()
            self._batch_open = True
        if self._changes is not None:
            pending = self._pending
            # Changes made until the flush (the end of this loop turn, or the flush interval
            # after the previous request) travel as one request. A key that changes direction
            # meanwhile sends what came before first,
            # because the push service applies a request's additions before its removals.
            changes = [(("t", t), True) for t in add_topics] + [(("t", t), False) for t in remove_topics]
            changes += [(("c", c), True) for c in add_client_ids] + [(("c", c), False) for c in remove_client_ids]
            changes += [(("j", t), True) for t in add_join_leave] + [(("j", t), False) for t in remove_join_leave]
            changes += [(("u", u), True) for u in add_users] + [(("u", u), False) for u in remove_users]
            for change in presence:  # the latest change of a client in a topic is what counts
                self._presence[(change.topic, change.client.client_id)] = change
            for key, add in changes:
                if pending.get(key, add) != add:
                    self._flush_pending()  # sent under the open sequence; what follows gets a new one
                    self._next_sequence()
                    self._batch_open = True
                    pending = self._pending
                pending[key] = add
            if self._flush_handle is None:
                loop = asyncio.get_running_loop()
                delay = self._last_flush + self._flush_interval - loop.time()
                self._flush_handle = (loop.call_later(delay, self._flush_pending) if delay > 0
                                      else loop.call_soon(self._flush_pending))
        return self._unconfirmed[-1][1]

    def _flush_pending(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # when called before its time (a key changing direction)
            self._flush_handle = None
        self._last_flush = asyncio.get_running_loop().time()
        self._batch_open = False
        if not (self._pending or self._presence) or self._changes is None:
            self._pending, self._presence = {}, {}
            return
        request = pb.EdgeStreamRequest(sequence=self._sequence, presence=list(self._presence.values()))
        fields = {"t": (request.add_topics, request.remove_topics),
                  "c": (request.add_client_ids, request.remove_client_ids),
                  "j": (request.add_join_leave, request.remove_join_leave),
                  "u": (request.add_users, request.remove_users)}
        for (kind, key), add in self._pending.items():
            fields[kind][0 if add else 1].append(key)
        if self._extras is not None:
            request.edge_id = self._extras.edge_id
        self._pending, self._presence = {}, {}
        self._changes.put_nowait(request)

    def _next_sequence(self) -> int:
        self._sequence += 1
        self._unconfirmed.append((self._sequence, asyncio.get_running_loop().create_future()))
        return self._sequence

    def _confirm(self, applied: int) -> None:
        while self._unconfirmed and self._unconfirmed[0][0] <= applied:
            _, future = self._unconfirmed.popleft()
            if not future.done():
                future.set_result(None)

    async def _run(self) -> None:
        await reconnect_forever(self._stream_once, self._backoff, log, f"push stream to {self.address}",
                                expected=(grpc.aio.AioRpcError, StreamSilent))

    async def _stream_once(self, up: Callable[[], None]) -> None:
        silent = False
        try:
            await self._watched(up)
        except StreamSilent:
            silent = True
            self.silences += 1
            raise
        finally:
            self._changes = None
            if self.connected.is_set() and self._events is not None:
                self._events.on_lost()
            self.connected.clear()
            self.reconnects += 1
            self._next_replica(silent)

    async def _watched(self, up: Callable[[], None]) -> None:
        """The stream, given up when the push service is silent too long: from the start (its first
        answer, a heartbeat, comes at once) and, once it has said it sends heartbeats, throughout.

        A silence that this process partly slept through (stopped, starved of CPU, its loop blocked)
        is not judged at once: what the replica sent meanwhile waits unread, and the timer wakes before
        gRPC's poller thread has read it. The watchdog ticks at least every quarter limit, so a tick
        late by more than STALL tells that the process did not run; the replica then gets a whole limit
        from that moment, once per silence (without that bound, a loop always late would never judge).
        A replica that is really silent is so given up at most one limit later."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        self._limit = self._silence
        resumed = -math.inf  # when this process last ran again after not running
        grace_from = -math.inf  # the silence counts from here, if later than the last response
        graced = None  # the `_heard` of the silence last given a grace: one grace per silence
        stream = asyncio.create_task(self._stream(up), name="push-stream")
        try:
            while True:
                limit = self._limit
                now = loop.time()
                wait = None if limit is None else min(limit / 4, max(0.01, max(self._heard, grace_from) + limit - now))
                done, _ = await asyncio.wait({stream}, timeout=wait)
                if done:
                    return stream.result()
                due, now, limit = now + (wait or 0.0), loop.time(), self._limit
                if wait is not None and now - due > STALL:
                    resumed = now
                if limit is None or now - max(self._heard, grace_from) < limit:
                    continue
                if resumed > self._heard and graced != self._heard:
                    log.warning("%s said nothing for %.1fs, but this process did not run for part of it: "
                                "%.1fs more", self.replica, now - self._heard, limit)
                    grace_from, graced = now, self._heard
                    continue
                raise StreamSilent(f"{self.replica} said nothing for {now - self._heard:.1f}s")
        finally:
            if not stream.done():
                stream.cancel()
                await asyncio.gather(stream, return_exceptions=True)

    async def _stream(self, up: Callable[[], None]) -> None:
        changes: asyncio.Queue[pb.EdgeStreamRequest] = asyncio.Queue()
        topics, client_ids, position_topics = self._snapshot()
        self._pending, self._presence = {}, {}  # covered by the snapshot
        self._batch_open = False  # changes from now on are not covered by this snapshot
        snapshot_sequence = self._next_sequence()
        snapshot = pb.EdgeStreamRequest(add_topics=topics, add_client_ids=client_ids, sequence=snapshot_sequence,
                                        position_topics=position_topics)
        if self._extras is not None:
            self._extras.fill_snapshot(snapshot)
        changes.put_nowait(snapshot)
        self._changes = changes

        async def requests():  # type: ignore[no-untyped-def]
            while True:
                yield await changes.get()

        call = self.stub.EdgeStream(requests())
        loop = asyncio.get_running_loop()
        self._beating = False
        try:
            await call.wait_for_connection()
            async for response in call:
                self._heard = loop.time()
                self._on_response(response, snapshot_sequence, len(topics), len(client_ids), up)
        finally:
            call.cancel()  # when the watchdog gave up on it: nothing more from that replica

    def _on_response(self, response: pb.EdgeStreamResponse, snapshot_sequence: int, topics: int, client_ids: int,
                     up: Callable[[], None]) -> None:
        if response.report_interval_ms:
            self._report_interval = response.report_interval_ms / 1000
            if self._extras is not None:
                self._extras.on_rules(response.presence_rules)
        if response.heartbeat_ms:
            # A replica's interval longer than our patience must not be taken for silence.
            self._limit = max(self._silence, 2.5 * response.heartbeat_ms / 1000)
            self._beating = True
        elif not self._beating:
            self._limit = None  # its first answer was no heartbeat: a push service that sends none
        if response.deliveries:
            self._on_deliveries(response.deliveries)
        if response.resync and self._events is not None:
            self._events.on_resync()
        if response.applied_sequence:
            self._confirm(response.applied_sequence)  # (its futures' callbacks run later)
            if (response.topic_positions or response.unpublished_topics) and self._events is not None:
                # (0, ""): nothing published yet (core/sequencer.py)
                self._events.on_positions({**dict.fromkeys(response.unpublished_topics, (0, "")),
                                           **{p.topic: (p.offset, p.epoch) for p in response.topic_positions}})
            if response.applied_sequence >= snapshot_sequence and not self.connected.is_set():
                # Connected means: the push service holds this edge's whole interest again.
                self.connected.set()
                if self._was_up and self._events is not None:
                    self._events.on_restored()
                self._was_up = True
                up()
                log.info("push stream to %s up (%d topics, %d client ids)", self.replica, topics, client_ids)
