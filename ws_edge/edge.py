"""The edge's shared state: its connections and their interest, the push link, admission, history.

Per connection, what the browser protocol decides is in its session (core/session.py), run by a
SessionDriver (session_driver.py); fan-out is in delivery.py, presence in presence.py. Edge-wide
here: routing tables, interest confirmations (interest.py), limits per user and address, client ids,
history, sweeps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from common.client_ids import new_edge_mark, routed_by_itself

from . import metrics
from .config import EdgeSettings
from .confirm_gates import ConfirmGates
from .core.auth import Principal
from .core.codes import CloseCode
from .core.limits import AttemptLimiter, ConnectionCounter
from .core.permissions import Access
from .core.recovery import Position
from .core.routing import DeliveryRouter
from .core.sendqueue import SendQueue
from .core.session import HistoryAnswer
from .delivery import DeliveryPump
from .handlers import HandlerContext, HandlerRegistry, default_handlers
from .inboxes import StreamInboxes
from .interest import FirstInterests, Interest
from .presence import EdgePresence
from .push_link import PushLink
from .rules import grpc_channel, hook_client, session_rules
from .task_gateway import TaskGateway
from .wire import choose_frame_writer

if TYPE_CHECKING:
    from .connection import Connection


class SessionDriver(Protocol):
    """What the edge needs of a connection's driver (session_driver.py): its socket and its clock."""

    connection: Connection

    def tick(self, now: float, wall: float) -> None: ...


log = logging.getLogger("ws_edge")
ChannelFactory = Callable[[str], Any]  # an address -> a grpc.aio.Channel, or what stubs take as one
CLIENT_ID_HELD = "client_id is held by another user"


class Edge:
    def __init__(self, settings: EdgeSettings, handlers: HandlerRegistry | None = None,
                 push_channel: ChannelFactory | None = None) -> None:
        """`push_channel`: how the link reaches the push service, when not over the network (the push
        service in this process: single_process)."""
        self.settings = settings
        self._channel = partial(grpc_channel, settings)  # to a backend, with the configured token and TLS
        self.handlers = handlers if handlers is not None else default_handlers()
        self.router = DeliveryRouter()
        self.connections: dict[int, SessionDriver] = {}
        # The ids this edge assigns are routed to it by this mark: one interest for all of them.
        self.client_id_mark = new_edge_mark()
        self.pump = DeliveryPump(self.router, self.read_history, settings.conflated, settings.batch_max_messages,
                                 confirmed_now=lambda topic: self.interests.confirmed_now(topic),
                                 applying=lambda topic: self.interests.applying(topic, self._gates.timed_out))
        # HTTP-transport sessions by session id (`~<mark>.<hex>`): where `POST /emulation` puts frames.
        self.inboxes = StreamInboxes()
        self.presence = EdgePresence(self.client_id_mark, self.router, self.connections, **settings.presence_options)
        self.push = PushLink(settings.push_address, push_channel or self._channel, self._on_deliveries,
                             self._interest_snapshot,
                             reconnect_max=settings.push_reconnect_max, events=self.pump,
                             silence_timeout=settings.push_silence_timeout, extras=self.presence)
        self.presence.push = self.push
        self.stats = {"coalesced": 0, "slow_consumers": 0}  # of connections already gone
        self.tasks = TaskGateway(settings.task_address, channel_factory=self._channel)
        self.attempts = AttemptLimiter(settings.connect_rate_per_ip, settings.connect_burst_per_ip)
        self._per_user = ConnectionCounter()
        self.addresses = ConnectionCounter()  # open WebSockets per address (counted by app.serve_socket)
        self._sweeper: asyncio.Task[None] | None = None
        self.draining = False
        self.interests = FirstInterests(self.router, self.push)
        self._gates = ConfirmGates(settings.subscribe_confirm_timeout)  # a recovery's read: as long again
        self._recovery_gates = ConfirmGates(settings.subscribe_confirm_timeout, "push service did not confirm an "
                                            "interest change within %.1fs more: recoveries waiting on it give up",
                                            remember_late=False)
        self.verifier, self.policy, self.origins = settings.verifier, settings.policy, settings.origins
        self.rules = session_rules(settings, self.verifier, self.policy, lambda t: self.handlers.get(t) is not None,
                                   presence=lambda: self.presence.rules)
        self.hooks = hook_client(settings)  # the application's BackendHooks, when a hook is on
        self.frames = choose_frame_writer()  # how frames reach sockets: uvicorn's fast path, or ASGI
        metrics.FRAME_WRITER.labels(self.frames.name).set(1)
        metrics.EDGES.edges.add(self)

    def _on_deliveries(self, deliveries: Sequence[Any]) -> None:
        """From the push stream: stream sessions' client frames to their inboxes, join/leave events and
        commands to presence, the messages fanned out. Almost every batch is messages only: one scan."""
        if not any(d.control or d.kind for d in deliveries):  # kind 0: pb.MESSAGE
            self.pump.on_deliveries(deliveries)
        elif rest := self.presence.take(self.inboxes.take_control(deliveries)):
            self.pump.on_deliveries(rest)

    async def start(self) -> None:
        self.tasks.open()
        if self.hooks is not None:
            self.hooks.open()
        self.push.start()
        self.pump.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="heartbeat-sweeper")

    async def go_away(self, timeout: float) -> None:
        """Graceful shutdown: not ready any more, then every client's queued frames flushed and the
        client closed with 1001 (reconnect: another edge, or this one restarted, recovers the rest)."""
        self.draining = True
        log.info("going away: %d connections", len(self.connections))
        closing = [asyncio.create_task(d.connection.flush_and_close(CloseCode.GOING_AWAY, "going away", timeout))
                   for d in self.connections.values()]
        if closing:
            await asyncio.wait(closing, timeout=timeout + 1)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.pump.stop()
        for driver in list(self.connections.values()):
            driver.connection.close_soon(CloseCode.GOING_AWAY, "edge shutting down")
        await asyncio.sleep(0)
        await self.push.close()
        await self.tasks.close()
        if self.hooks is not None:
            await self.hooks.close()

    # --- admission and interest -------------------------------------------------------------------

    def admit(self, driver: SessionDriver, principal: Principal) -> tuple[CloseCode, str] | list[asyncio.Future[None]]:
        """Count a new connection against the edge's limits and route its client id to it: a refusal
        (close code, reason), or what to await before its personal messages can arrive."""
        connection, client_id = driver.connection, driver.connection.client_id
        holders = self.router.client_ids.subscribers(client_id)
        if any(h.principal.user != principal.user for h in holders):  # type: ignore[attr-defined]
            return CloseCode.INVALID_CLIENT_ID, CLIENT_ID_HELD
        if principal.user is not None and not self._per_user.acquire(principal.user,
                                                                     self.settings.max_connections_per_user):
            return CloseCode.TOO_MANY_CONNECTIONS, "too many connections"
        connection.principal = principal
        self.connections[connection.id] = driver
        metrics.OPENED.inc()
        self.presence.admitted(connection)
        if self.router.client_ids.add(client_id, connection) and routed_by_itself(client_id):
            return [self.push.change(add_client_ids=[client_id])]
        return []  # already wanted, or an id this edge assigned (its mark has been declared since the start)

    @staticmethod
    def needs_claim(client_id: str) -> bool:
        return routed_by_itself(client_id)  # a chosen client_id is owned cluster-wide; an assigned one is not

    async def claim(self, client_id: str, principal: Principal) -> tuple[CloseCode, str] | None:
        """Claim a chosen client_id (the push service's ClaimClientId): None when `principal` may
        use it, else the refusal."""
        if not self.needs_claim(client_id):
            return None
        holders = self.router.client_ids.subscribers(client_id)
        if any(h.principal.user != principal.user for h in holders):  # type: ignore[attr-defined]
            return CloseCode.INVALID_CLIENT_ID, CLIENT_ID_HELD  # refused here, without asking
        granted = await self.push.claim_client_id(client_id, principal.user)
        if granted is None:
            return CloseCode.TRY_AGAIN_LATER, "client_id cannot be checked now; retry later"
        return None if granted else (CloseCode.INVALID_CLIENT_ID, CLIENT_ID_HELD)

    def add_interest(self, connection: Connection, topics: Sequence[str]) -> Interest:
        """`FirstInterests.route` (interest.py), and the connection joins the topics' presence."""
        routed = self.interests.route(connection, topics)
        self.presence.joined(connection, topics)
        return routed

    def drop_interest(self, connection: Connection, topics: Sequence[str]) -> None:
        self.presence.left(connection, topics)
        if last := self.router.remove_topics(connection, topics):
            self.push.change(remove_topics=last)

    def when_confirmed(self, waits: list[asyncio.Future[None]], then: Callable[[], None]) -> bool:
        return self._gates.when_confirmed(waits, then)

    def when_confirmed_for_recovery(self, waits: list[asyncio.Future[None]], then: Callable[[], None]) -> bool:
        """The same, for the changes whose first wait timed out: one gate and one timer per change."""
        return self._recovery_gates.when_confirmed(waits, then)

    async def confirmed(self, waits: list[asyncio.Future[None]]) -> None:
        await self._gates.confirmed(waits)

    def detach(self, driver: SessionDriver) -> None:
        connection = driver.connection
        if self.connections.pop(connection.id, None) is None:
            return
        self.stats["coalesced"] += connection.coalesced
        if connection.closed_as_slow:
            self.stats["slow_consumers"] += 1
        self.presence.detached(connection)
        if connection.principal.user is not None:
            self._per_user.release(connection.principal.user)
        if emptied := self.router.remove_connection(connection):
            self.push.change(remove_topics=emptied)
        client_id = connection.client_id
        if self.router.client_ids.remove(client_id, connection) and routed_by_itself(client_id):
            self.push.change(remove_client_ids=[client_id])

    def _interest_snapshot(self) -> tuple[list[str], list[str], list[str]]:
        """The whole interest, for a new stream's first request; with the topics whose positions the
        push service is asked for (those of the others are checked against history on a restore)."""
        chosen = [client_id for client_id in self.router.client_ids.keys() if routed_by_itself(client_id)]
        topics = list(self.router.topics.keys())
        return topics, [self.client_id_mark, *chosen], self.router.sequencer.unplaced(topics)

    # --- calls to the backends ------------------------------------------------------------------

    async def read_history(self, topic: str, since: Position | None, latest: int = 0) -> HistoryAnswer:
        return await self.push.history(topic, None if since is None else (since.offset, since.epoch),
                                       self.settings.send_queue_bytes, latest)

    def may_control_tasks(self, principal: Principal) -> bool:
        control = self.settings.task_control
        return control is Access.PUBLIC or (control is Access.AUTHENTICATED and principal.authenticated)

    def handler_context(self, connection: Connection) -> HandlerContext:
        return HandlerContext(connection.client_id, connection.principal, self.push.publish, self.tasks,
                              self.policy.can_publish, self.may_control_tasks)

    def new_send_queue(self) -> SendQueue:
        s = self.settings
        return SendQueue(s.coalesce_mark, s.send_queue_frames, s.send_queue_bytes, s.batch_max_messages)

    # --- heartbeats -------------------------------------------------------------------------------

    def sweep(self, now: float, wall: float) -> None:
        """Every session's clock: closes those silent too long and those whose token expired."""
        for driver in list(self.connections.values()):
            driver.tick(now, wall)

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.heartbeat_check_interval)
            self.sweep(loop.time(), time.time())
