"""The edge itself: its connections, their topics, the push link, and the browser protocol's dispatch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

import grpc
from push.v1 import push_service_pb2 as push_pb

from common.client_ids import new_edge_mark, routed_by_itself
from common.clock import now_ms
from common.grpc_security import secure_channel
from common.topics import topic_error

from . import metrics
from .config import EdgeSettings
from .connection import Connection
from .core.auth import Principal
from .core.codes import CloseCode, ErrorCode
from .core.fanout import DeliveryLike, Fanout
from .core.frames import (
    ProtocolError,
    error_frame,
    parse_client_frame,
    server_frame,
    topics_field,
)
from .core.limits import AttemptLimiter, ConnectionCounter
from .core.pacing import FanoutPacing
from .core.permissions import Access
from .core.recovery import Position, in_frames, positions_field, recovery_report, stitch
from .core.sendqueue import SendQueue
from .handlers import HandlerContext, HandlerError, HandlerRegistry, default_handlers
from .push_link import CHANNEL_OPTIONS, PushLink
from .task_gateway import TaskGateway

log = logging.getLogger("ws_edge")
MAX_BATCHES_PER_FANOUT = 32
CLIENT_ID_HELD = "client_id is held by another user"


class Edge:
    def __init__(self, settings: EdgeSettings, handlers: HandlerRegistry | None = None) -> None:
        self.settings = settings
        self.handlers = handlers if handlers is not None else default_handlers()
        self.fanout = Fanout()
        self.connections: dict[int, Connection] = {}
        # The ids this edge assigns are routed to it by this mark: one interest for all of them.
        self.client_id_mark = new_edge_mark()
        self.push = PushLink(
            settings.push_address,
            self._channel,
            self._on_deliveries,
            self._interest_snapshot,
            reconnect_max=settings.push_reconnect_max,
            on_lost=self._push_lost,
            on_restored=self._push_restored,
            on_resync=self._resync,
        )
        self._positions_at_loss: dict[str, tuple[int, str]] = {}
        self._conflated = settings.conflated
        self.stats = {"coalesced": 0, "slow_consumers": 0}  # of connections already gone
        self.tasks = TaskGateway(settings.task_address, channel_factory=self._channel)
        self.verifier = settings.verifier
        self.policy = settings.policy
        self.origins = settings.origins
        self.attempts = AttemptLimiter(settings.connect_rate_per_ip, settings.connect_burst_per_ip)
        self._per_user = ConnectionCounter()
        self._per_address = ConnectionCounter()
        self._sweeper: asyncio.Task[None] | None = None
        self.draining = False
        self._confirming: dict[str, asyncio.Future[None]] = {}  # topic -> its first-interest change
        self._gates: dict[asyncio.Future[None], asyncio.Future[None]] = {}  # see _gate
        self._incoming: list[Sequence[DeliveryLike]] = []  # batches from the push service, not yet fanned out
        self._incoming_ready = asyncio.Event()
        self._fan_out_task: asyncio.Task[None] | None = None
        self._gap_fills: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references
        metrics.EDGES.edges.add(self)

    def _channel(self, address: str) -> grpc.aio.Channel:
        """A gRPC channel to a backend, with the configured bearer token and TLS."""
        return secure_channel(
            address,
            token=self.settings.grpc_token.get_secret_value() if self.settings.grpc_token else None,
            ca_file=self.settings.grpc_tls_ca_file,
            cert_file=self.settings.grpc_tls_cert_file,
            key_file=self.settings.grpc_tls_key_file,
            server_name=self.settings.grpc_tls_server_name,
            options=CHANNEL_OPTIONS,
        )

    async def start(self) -> None:
        self.tasks.open()
        self.push.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="heartbeat-sweeper")
        self._fan_out_task = asyncio.create_task(self._fan_out_forever(), name="fan-out")

    async def go_away(self, timeout: float) -> None:
        """Graceful shutdown: not ready any more, then every client's queued frames flushed and the
        client closed with 1001 (reconnect: another edge, or this one restarted, recovers the rest)."""
        self.draining = True
        log.info("going away: %d connections", len(self.connections))
        connections = list(self.connections.values())
        if connections:
            await asyncio.wait([asyncio.create_task(c.flush_and_close(CloseCode.GOING_AWAY, "going away", timeout))
                                for c in connections], timeout=timeout + 1)

    async def close(self) -> None:
        for task in (self._sweeper, self._fan_out_task):
            if task is not None:
                task.cancel()
        for connection in list(self.connections.values()):
            connection.close_soon(CloseCode.GOING_AWAY, "edge shutting down")
        await asyncio.sleep(0)
        await self.push.close()
        await self.tasks.close()

    # --- connections -------------------------------------------------------------------------

    def attach(self, connection: Connection) -> list[asyncio.Future[None]]:
        """Register a connection; returns what to await before its personal messages can arrive."""
        self.connections[connection.id] = connection
        client_id = connection.client_id
        if self.fanout.client_ids.add(client_id, connection) and routed_by_itself(client_id):
            return [self.push.change(add_client_ids=[client_id])]
        return []  # already wanted, or an id this edge assigned (its mark has been declared since the start)

    async def confirmed(self, waits: list[asyncio.Future[None]]) -> None:
        """Wait until the push service has applied these interest changes (bounded: while it is
        down the changes are re-declared on reconnect, and the browser need not wait for that)."""
        for wait in waits:
            if not wait.done():
                await self._gate(wait)

    def _gate(self, applied: asyncio.Future[None]) -> asyncio.Future[None]:
        """A future done when `applied` is, or after the confirm timeout: one per interest change,
        shared by every connection of a burst that waits on it (one timer, not one each)."""
        gate = self._gates.get(applied)
        if gate is None:
            loop = asyncio.get_running_loop()
            gate = self._gates[applied] = loop.create_future()
            timeout = self.settings.subscribe_confirm_timeout

            def open_gate(late: bool) -> None:
                if gate.done():
                    return
                if late:
                    log.warning("push service did not confirm an interest change within %.1fs", timeout)
                gate.set_result(None)
                self._gates.pop(applied, None)
                timer.cancel()

            timer = loop.call_later(timeout, open_gate, True)
            applied.add_done_callback(lambda _: open_gate(False))
        return gate

    def acquire_slots(self, principal: Principal, address: str) -> bool:
        """Count a new connection against its user's and its address's limits; False if over."""
        if not self._per_address.acquire(address, self.settings.max_connections_per_ip):
            return False
        if principal.user is not None and not self._per_user.acquire(principal.user,
                                                                     self.settings.max_connections_per_user):
            self._per_address.release(address)
            return False
        return True

    def may_control_tasks(self, principal: Principal) -> bool:
        control = self.settings.task_control
        return control is Access.PUBLIC or (control is Access.AUTHENTICATED and principal.authenticated)

    def client_id_available(self, client_id: str, principal: Principal) -> bool:
        """A client-chosen id held by another user's connection is refused (it would receive that
        connection's personal messages)."""
        holders = self.fanout.client_ids.subscribers(client_id)
        return all(h.principal.user == principal.user for h in holders)  # type: ignore[attr-defined]

    async def claim_client_id(self, client_id: str, principal: Principal) -> tuple[int, str] | None:
        """A chosen client_id belongs to the user who first took it on any edge, until the push
        service's hold runs out after its last use (ClaimClientId). None when `principal` may use it,
        else the close code and reason: taken, or unchecked (the push service cannot be asked)."""
        request = push_pb.ClaimClientIdRequest(client_id=client_id)
        if principal.user is not None:
            request.user = principal.user
        try:
            reply = await self.push.stub.ClaimClientId(request, timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            log.warning("client_id %r not checked: %s %s", client_id, exc.code().name, exc.details())
            return CloseCode.TRY_AGAIN_LATER, "client_id cannot be checked now; retry later"
        return None if reply.granted else (CloseCode.INVALID_CLIENT_ID, CLIENT_ID_HELD)

    def detach(self, connection: Connection) -> None:
        if self.connections.pop(connection.id, None) is None:
            return
        self.fanout.release_all(connection)
        self.stats["coalesced"] += connection.coalesced
        if connection.closed_as_slow:
            self.stats["slow_consumers"] += 1
        self._per_address.release(connection.address)
        if connection.principal.user is not None:
            self._per_user.release(connection.principal.user)
        emptied = self.fanout.topics.remove_subscriber(connection)
        for topic in emptied:
            self.fanout.forget_topic(topic)
        if emptied:
            self.push.change(remove_topics=emptied)
        client_id = connection.client_id
        if self.fanout.client_ids.remove(client_id, connection) and routed_by_itself(client_id):
            self.push.change(remove_client_ids=[client_id])

    def check_topics(self, connection: Connection, topics: Iterable[object], message_id: str | None) -> list[str]:
        """Validate topics for `connection` to subscribe; raises ProtocolError, changes nothing."""
        checked = []
        for topic in topics:
            if (why := topic_error(topic)) is not None:
                raise ProtocolError(ErrorCode.INVALID_TOPIC, why, message_id)
            if not self.policy.can_subscribe(connection.principal, topic):  # type: ignore[arg-type]
                raise ProtocolError(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {topic}", message_id)
            checked.append(topic)
        checked = list(dict.fromkeys(checked))  # type: ignore[arg-type]
        current = self.fanout.topics.keys_of(connection)
        total = len(current | set(checked))
        if total > self.settings.max_topics_per_connection:
            raise ProtocolError(
                ErrorCode.TOO_MANY_TOPICS,
                f"{total} topics; a connection may hold {self.settings.max_topics_per_connection}",
                message_id,
            )
        return checked  # type: ignore[return-value]

    def subscribe(self, connection: Connection, topics: Sequence[str]) -> tuple[list[asyncio.Future[None]], list[bytes]]:
        """Add topics to `connection`. Returns what to await before acknowledging (the push service
        applying first interests) and the retained frames to send after the acknowledgement."""
        first, waits, retained_frames = [], [], []
        for topic in topics:
            if self.fanout.topics.add(topic, connection):
                first.append(topic)  # the push service will send its retained state, if any
            elif (pending := self._confirming.get(topic)) is not None:
                waits.append(pending)  # its retained state is on the way to every subscriber
            elif (retained := self.fanout.retained_frame(topic)) is not None:
                retained_frames.append(retained)
        if first:
            future = self.push.change(add_topics=first)
            waits.append(future)
            for topic in first:
                self._confirming[topic] = future
            future.add_done_callback(lambda done, topics=first: self._confirmed_topics(topics, done))
        return waits, retained_frames

    def _confirmed_topics(self, topics: list[str], future: asyncio.Future[None]) -> None:
        for topic in topics:
            if self._confirming.get(topic) is future:
                del self._confirming[topic]

    def unsubscribe(self, connection: Connection, topics: Sequence[str]) -> None:
        last = [t for t in topics if self.fanout.topics.remove(t, connection)]
        for topic in last:
            self.fanout.forget_topic(topic)
        if last:
            self.push.change(remove_topics=last)

    # --- inbound frames ---------------------------------------------------------------------------

    async def handle_frame(self, connection: Connection, frame: str | bytes, now: float) -> None:
        connection.last_seen = now
        metrics.CLIENT_FRAMES.inc()
        message_id = None
        try:
            try:
                message = parse_client_frame(frame, self.settings.max_frame_bytes)
            finally:
                allowed = connection.bucket.allow(now)  # malformed frames count against the rate too
            message_id = message.id
            if not allowed:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"more than {self.settings.rate_limit:g} messages per second; message dropped",
                    message_id,
                )
            await self._dispatch(connection, message)
        except ProtocolError as exc:
            self.send_error(connection, exc.code, exc.message, exc.message_id)
        except HandlerError as exc:
            self.send_error(connection, exc.code, exc.message, message_id)
        except Exception:
            log.exception("#%d: handler failed", connection.id)
            self.send_error(connection, ErrorCode.INTERNAL_ERROR, "internal error", message_id)

    @staticmethod
    def send_error(connection: Connection, code: str, message: str, message_id: str | None) -> None:
        metrics.ERROR_FRAMES.labels(code).inc()
        connection.send(error_frame(code, message, message_id, now_ms()))

    async def _dispatch(self, connection: Connection, message) -> None:  # type: ignore[no-untyped-def]
        type_ = message.type
        if type_ == "ping":
            connection.send(server_frame("pong", message.id, now_ms()))
        elif type_ == "subscribe":
            topics = self.check_topics(connection, topics_field(message), message.id)
            since = positions_field(message, topics)
            for topic in since:
                self.fanout.hold(connection, topic)  # live messages wait until the missed ones are out
            try:
                waits, retained_frames = self.subscribe(connection, topics)
                await self.confirmed(waits)
                reads = {topic: await self._read_history(topic, position) for topic, position in since.items()}
                ack: dict[str, Any] = {"type": "subscribe", "topics": topics}
                if since:
                    ack["recovery"] = {t: recovery_report(r.recovered, r.offset, r.epoch, r.reason)
                                       for t, r in reads.items()}
                connection.send(server_frame("ack", message.id, now_ms(), ack))
                for frame in retained_frames:
                    connection.send(frame)
                for topic, position in since.items():
                    read = reads[topic]
                    missed = list(read.publications) if read.recovered else []
                    held = self.fanout.release(connection, topic)
                    for frame in in_frames(stitch(missed, held, position)):
                        connection.send(frame)
                    # Messages older than what was just sent may still be on their way from the push
                    # service (history was read on another call): this connection skips them.
                    sent = [d for d in (*missed, *held) if d.offset and d.epoch == position.epoch]
                    if sent:
                        newest = max(sent, key=lambda d: d.offset)
                        self.fanout.set_floor(connection, topic, newest.offset, newest.epoch)
            finally:
                for topic in since:
                    self.fanout.release(connection, topic)
        elif type_ == "unsubscribe":
            topics = list(topics_field(message))
            for topic in topics:
                if (why := topic_error(topic)) is not None:
                    raise ProtocolError(ErrorCode.INVALID_TOPIC, why, message.id)
            self.unsubscribe(connection, topics)
            connection.send(server_frame("ack", message.id, now_ms(), {"type": "unsubscribe", "topics": topics}))
        else:
            handler = self.handlers.get(type_)
            if handler is None:
                raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"Unknown message type: {type_}", message.id)
            result = await handler(HandlerContext(self, connection), message)
            ack = {"type": type_} if result is None else {"type": type_, **result}
            connection.send(server_frame("ack", message.id, now_ms(), ack))

    # --- fan-out and heartbeats ---------------------------------------------------------------

    def _push_lost(self) -> None:
        # Where each topic was, and hold its deliveries until the gap is filled: the order stays right.
        self._positions_at_loss = dict(self.fanout.positions)
        for topic in self._positions_at_loss:
            self.fanout.hold_topic(topic)

    def _resync(self) -> None:
        """The push service's broker reconnected: every topic is checked against history."""
        positions = dict(self.fanout.positions)
        for topic in positions:
            self.fanout.hold_topic(topic)
        self._fill_gaps_soon(positions)

    def _push_restored(self) -> None:
        self._fill_gaps_soon(self._positions_at_loss)

    def _fill_gaps_soon(self, positions: dict[str, tuple[int, str]]) -> None:
        task = asyncio.create_task(self._fill_gaps(positions), name="fill-gaps")
        self._gap_fills.add(task)
        task.add_done_callback(self._gap_fills.discard)

    async def _fill_gaps(self, positions: dict[str, tuple[int, str]]) -> None:
        """After the push stream came back: per topic, what was published while it was down comes
        from history. If the history cannot say (a new epoch: the push service restarted), every
        subscriber is told (`recovery` with recovered false) and then gets what the new epoch holds."""
        for topic, (offset, epoch) in positions.items():
            try:
                since = Position(offset, epoch)
                read = await self._read_history(topic, since)
                missed = list(read.publications)
                if not read.recovered:
                    log.warning("%s: subscribers cannot recover: %s", topic, read.reason)
                    notice = server_frame("recovery", None, now_ms(), {
                        "topic": topic, **recovery_report(False, read.offset, read.epoch, read.reason)})
                    for connection in list(self.fanout.topics.subscribers(topic)):
                        connection.send(notice)  # type: ignore[attr-defined]
                    since = Position(read.offset if read.reason != "epoch changed" else 0, read.epoch)
                    if read.reason == "epoch changed":
                        latest = await self.push.stub.History(push_pb.HistoryRequest(topic=topic), timeout=5.0)
                        missed = list(latest.publications) if latest.epoch == read.epoch else []
            except Exception:
                log.exception("filling the gap of %s failed", topic)
                missed, since = [], Position(0, "")
            held = self.fanout.release_topic(topic)
            frames = in_frames(stitch(missed, held, since))
            positioned = [d for d in (*missed, *held) if d.offset]
            if positioned:
                newest = max(positioned, key=lambda d: (d.epoch == positioned[-1].epoch, d.offset))
                self.fanout.positions[topic] = (newest.offset, newest.epoch)
            elif since.epoch != epoch:  # a new epoch with nothing in it yet: continue from its start
                self.fanout.positions[topic] = (since.offset, since.epoch)
            for connection in list(self.fanout.topics.subscribers(topic)):
                for frame in frames:
                    connection.send(frame)  # type: ignore[attr-defined]

    async def _read_history(self, topic: str, position: Position) -> Any:
        request = push_pb.HistoryRequest(topic=topic, since_offset=position.offset, epoch=position.epoch)
        try:
            return await self.push.stub.History(request, timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            log.warning("history of %s unavailable: %s", topic, exc.details())
            return push_pb.HistoryResponse(recovered=False, reason="history unavailable")

    def _on_deliveries(self, deliveries: Sequence[DeliveryLike]) -> None:
        """From the push stream's reader: queue for the fan-out task, which takes all that is queued."""
        metrics.RECEIVED.inc(len(deliveries))
        metrics.PUSH_BATCH.observe(len(deliveries))
        self._incoming.append(deliveries)
        self._incoming_ready.set()

    async def _fan_out_forever(self) -> None:
        pacing = FanoutPacing()
        resumed = time.perf_counter()  # when the previous round (and its rest) ended
        while True:
            await self._incoming_ready.wait()
            # Let the stream's reader take what gRPC has already received before fanning out, so that
            # a busy edge writes several frames to a socket in one call (two quiet rounds: nothing more).
            quiet = 0
            while quiet < 2 and len(self._incoming) < MAX_BATCHES_PER_FANOUT:
                queued = len(self._incoming)
                await asyncio.sleep(0)
                quiet = quiet + 1 if len(self._incoming) == queued else 0
            batches, self._incoming = self._incoming, []
            self._incoming_ready.clear()
            started = time.perf_counter()
            try:
                self.fan_out(batches)
            except Exception:
                log.exception("fan-out failed")
            ended = time.perf_counter()
            rest = pacing.after_round(ended - started, ended - resumed)
            if rest and await self._behind():  # see core/pacing.py
                await asyncio.sleep(rest)
            resumed = time.perf_counter()

    async def _behind(self) -> bool:
        """Whether deliveries came in while the last round was written (the stream's reader takes
        what gRPC has received once the loop turns, twice: the poller's wake-up, then the read)."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return bool(self._incoming)

    def fan_out(self, batches: Sequence[Sequence[DeliveryLike]]) -> None:
        delivered = 0
        for frames, wire, connections, messages in self.fanout.route(batches):
            for connection in connections:
                direct = connection.direct  # type: ignore[attr-defined]
                if direct is None or not direct(wire):
                    connection.send_frames(frames, wire, messages, self._conflation_key)  # type: ignore[attr-defined]
            delivered += len(connections) * len(messages)
        metrics.DELIVERED.inc(delivered)
        now = now_ms()
        observe = metrics.LATENCY.observe
        for batch in batches:
            for delivery in batch:
                if delivery.timestamp_ms:
                    observe((now - delivery.timestamp_ms) / 1000)
        if gaps := self.fanout.take_discontinuities():
            # A message skipped offsets or began a new epoch (e.g. Redis lost its data): never silently.
            self._fill_gaps_soon(gaps)

    def _conflation_key(self, delivery: DeliveryLike) -> str | None:
        """On a conflated topic, what a newer message supersedes (only asked while a client is slow)."""
        topic = delivery.topic
        if not topic or not any(fnmatchcase(topic, pattern) for pattern in self._conflated):
            return None
        return f"{topic}\x00{delivery.conflation_key}"

    def new_send_queue(self) -> SendQueue:
        s = self.settings
        return SendQueue(s.coalesce_mark, s.send_queue_frames, s.send_queue_bytes)

    def _interest_snapshot(self) -> tuple[list[str], list[str]]:
        chosen = [client_id for client_id in self.fanout.client_ids.keys() if routed_by_itself(client_id)]
        return list(self.fanout.topics.keys()), [self.client_id_mark, *chosen]

    def sweep(self, now: float, wall: float) -> int:
        """Close connections silent for longer than the client timeout, and those whose token has
        expired (`wall` is the wall clock, as `exp` is); returns how many."""
        closed = 0
        for connection in list(self.connections.values()):
            if now - connection.last_seen > self.settings.client_timeout:
                log.info("#%d = heartbeat timeout, closing", connection.id, extra={"conn": connection.tag})
                connection.close_soon(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                closed += 1
            elif (expires := connection.principal.expires_at) is not None and expires <= wall:
                log.info("#%d = token expired, closing", connection.id, extra={"conn": connection.tag})
                connection.close_soon(CloseCode.TOKEN_EXPIRED, "token expired")
                closed += 1
        return closed

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.heartbeat_check_interval)
            self.sweep(loop.time(), time.time())
