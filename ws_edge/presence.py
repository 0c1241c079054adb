"""The edge's side of presence (issue 15): what it reports, and what it hands its connections.

Reported on the push stream (push_link.py): each connection's joins and leaves of topics with
presence (the push service's rules, told in the stream's first response), one entry per client id
and topic however many of its connections hold it; the topics whose join/leave events a connection
asked for; each user's first / last connection (occupancy); the edge's report every interval (it is
alive, and its figures). A new stream's first request declares all of it again (`fill_snapshot`).

Received from the push stream: join/leave events (to the connections that asked, through the
coalescing gate, core/joinleave.py) and the server API's commands (disconnect, subscribe,
unsubscribe a user's or a client id's connections here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol

import orjson
from push.v1 import push_service_pb2 as pb
from push.v1 import server_api_pb2 as api_pb

from common.clock import call_at_reached
from common.interest import InterestTable
from common.presence_rules import PresenceRules, public_client
from common.version import VERSION

from .core.frames import websocket_text_frame
from .core.joinleave import JoinLeaveGate
from .core.routing import DeliveryRouter

log = logging.getLogger("ws_edge.presence")


class Held(Protocol):
    """What this module needs of a connection's driver (session_driver.py)."""

    connection: Any

    def server_command(self, command: dict[str, Any]) -> None: ...


class EdgePresence:
    def __init__(self, edge_id: str, router: DeliveryRouter, connections: Mapping[int, Held], *, address: str,
                 join_leave_rate: float, summary_interval: float, report_max_topics: int) -> None:
        self.edge_id = edge_id
        self.rules = PresenceRules()
        self.push: Any = None  # the PushLink, set once it exists
        self._router = router
        self._connections = connections
        self._address = address
        self._started_ms = int(time.time() * 1000)
        self._report_max_topics = report_max_topics
        self.gate = JoinLeaveGate(join_leave_rate, summary_interval)
        self._summaries: asyncio.TimerHandle | None = None
        self._entries: dict[tuple[str, str], dict[Hashable, api_pb.ClientInfo]] = {}  # (topic, client id) -> holders
        self._of_connection: dict[Hashable, set[str]] = {}  # connection -> its topics with presence
        self.join_leave: InterestTable[str, Hashable] = InterestTable()
        self._users: InterestTable[str, Hashable] = InterestTable()

    # --- from the push stream's first response -----------------------------------------------------

    def on_rules(self, rules: str) -> None:
        try:
            parsed = PresenceRules.parse(rules)
        except ValueError:
            log.error("the push service's presence rules are not understood: %r", rules)
            return
        if str(parsed) != str(self.rules):
            log.info("presence rules: %s", parsed or "none")
            self.rules = parsed

    # --- what connections do ---------------------------------------------------------------------

    def joined(self, connection: Any, topics: Sequence[str]) -> None:
        """`connection` subscribed to `topics` (the push service learns of those with presence)."""
        changes = []
        for topic in topics:
            if not self.rules.has_presence(topic):
                continue
            holders = self._entries.setdefault((topic, connection.client_id), {})
            principal = connection.principal
            info = api_pb.ClientInfo(client_id=connection.client_id, user=principal.user or "",
                                 info=getattr(principal, "info", b""), joined_ms=int(time.time() * 1000))
            if not holders:
                changes.append(pb.PresenceChange(topic=topic, client=info))
            holders[connection] = info
            self._of_connection.setdefault(connection, set()).add(topic)
        if changes:
            self.push.change(presence=changes)

    def left(self, connection: Any, topics: Sequence[str]) -> None:
        changes = []
        mine = self._of_connection.get(connection)
        for topic in topics:
            if mine is None or topic not in mine:
                continue
            mine.discard(topic)
            key = (topic, connection.client_id)
            holders = self._entries.get(key, {})
            info = holders.pop(connection, None)
            if not holders:
                self._entries.pop(key, None)
                if info is not None:
                    changes.append(pb.PresenceChange(topic=topic, client=info, leave=True))
        if mine is not None and not mine:
            del self._of_connection[connection]
        if changes:
            self.push.change(presence=changes)
        self.want_join_leave(connection, topics, False)

    def want_join_leave(self, connection: Hashable, topics: Sequence[str], on: bool) -> None:
        if on:
            first = [t for t in topics if self.join_leave.add(t, connection)]
            if first:
                self.push.change(add_join_leave=first)
            return
        last = [t for t in topics if self.join_leave.remove(t, connection)]
        for topic in last:
            self.gate.forget(topic)
        if last:
            self.push.change(remove_join_leave=last)

    def admitted(self, connection: Any) -> None:
        user = connection.principal.user
        if user is not None and self._users.add(user, connection):
            self.push.change(add_users=[user])

    def detached(self, connection: Any) -> None:
        self.left(connection, list(self._of_connection.get(connection, ())))
        self.want_join_leave(connection, list(self.join_leave.keys_of(connection)), False)
        user = connection.principal.user
        if user is not None and self._users.remove(user, connection):
            self.push.change(remove_users=[user])

    # --- the stream ---------------------------------------------------------------------------------

    def fill_snapshot(self, request: pb.EdgeStreamRequest) -> None:
        request.edge_id = self.edge_id
        for (topic, _), holders in self._entries.items():
            request.presence.append(pb.PresenceChange(topic=topic, client=next(iter(holders.values()))))
        request.add_join_leave.extend(self.join_leave.keys())
        request.add_users.extend(self._users.keys())
        request.report.CopyFrom(self.report())

    def report(self) -> pb.EdgeReport:
        topics = {t: len(self._router.topics.subscribers(t)) for t in self._router.topics.keys()}
        subscriptions = sum(topics.values())
        truncated = len(topics) > self._report_max_topics
        if truncated:
            topics = dict(sorted(topics.items(), key=lambda kv: -kv[1])[:self._report_max_topics])
        return pb.EdgeReport(address=self._address, version=VERSION, started_ms=self._started_ms,
                             connections=len(self._connections), subscriptions=subscriptions,
                             topics=topics, truncated=truncated)

    def take(self, deliveries: Sequence[Any]) -> Sequence[Any]:
        """Join/leave events and commands are handled here; the rest (messages) is returned."""
        if all(d.kind == pb.MESSAGE for d in deliveries):
            return deliveries
        for delivery in deliveries:
            if delivery.kind == pb.JOIN_LEAVE:
                self._join_leave(delivery)
            elif delivery.kind == pb.COMMAND:
                self._command(delivery.frame)
        return [d for d in deliveries if d.kind == pb.MESSAGE]

    def _join_leave(self, delivery: pb.Delivery) -> None:
        subscribers = self.join_leave.subscribers(delivery.topic)
        if not subscribers:
            return
        loop = asyncio.get_running_loop()
        if self.gate.event(delivery.topic, delivery.frame.startswith(b'{"type":"join"'), loop.time(),
                           int(time.time() * 1000)):
            self._send(subscribers, delivery.frame)
        elif self._summaries is None and (deadline := self.gate.deadline()) is not None:
            self._summaries = call_at_reached(loop, deadline, self._send_summaries)

    def _send_summaries(self, now: float) -> None:
        self._summaries = None
        for topic, frame in self.gate.due(now, int(time.time() * 1000)):
            self._send(self.join_leave.subscribers(topic), frame)
        if (deadline := self.gate.deadline()) is not None:
            self._summaries = call_at_reached(asyncio.get_running_loop(), deadline, self._send_summaries)

    @staticmethod
    def _send(connections: Any, frame: bytes) -> None:
        wire = websocket_text_frame(frame)
        for connection in list(connections):
            connection.send(frame, wire)

    def _command(self, frame: bytes) -> None:
        try:
            command = orjson.loads(frame)
            user, client_id = command.get("user"), command.get("client_id")
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("a server command that is not JSON, dropped")
            return
        # Whose, from the tables the edge keeps anyway (not a scan of every connection).
        holders = set(self._users.subscribers(user)) if user else set()
        if client_id:
            holders.update(self._router.client_ids.subscribers(client_id))
        targets = [d for c in holders if (d := self._connections.get(c.id)) is not None]  # type: ignore[attr-defined]
        if targets:
            log.info("server command %s for %d connections", command.get("op"), len(targets))
        for driver in targets:
            driver.server_command(command)


async def read_presence(push: Any, topic: str, stats: bool) -> dict[str, Any]:
    """A browser's `presence` / `presence_stats` answer (the ack's data). Raises grpc.aio.AioRpcError."""
    request = api_pb.PresenceRequest(topic=topic)
    if stats:
        counts = await push.server_api("PresenceStats", request)
        return {"topic": topic, "clients": counts.num_clients, "users": counts.num_users}
    answer = await push.server_api("Presence", request)
    return {"topic": topic, "clients": [public_client(c.client_id, c.user, c.info, c.joined_ms)
                                        for c in answer.clients]}
