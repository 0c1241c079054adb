"""push.v1.ServerApi: presence, channels, nodes, and commands to connections, cluster-wide (issue 15).

Reads come from the broker (presence entries, the nodes' reports); commands are one publication on
the command channel, which every replica routes to every edge stream it serves: each edge acts on the
connections it holds (by user or client id), so whichever replica takes the call reaches them all.
"""

from __future__ import annotations

import time
from fnmatch import fnmatchcase

import grpc
import orjson
from push.v1 import server_api_pb2 as pb
from push.v1 import server_api_pb2_grpc as pb_grpc

from common.client_ids import MAX_CLIENT_ID_LENGTH
from common.disconnect_codes import DISCONNECTED_BY_SERVER, disconnect_code_error
from common.topics import topic_error

from .broker.base import BrokerUnavailable, unavailable_message
from .core.presence import stats
from .core.publication import COMMAND, Publication
from .hub import Hub
from .presence import Roster

MAX_REASON_BYTES = 123
MAX_USER_LENGTH = 100


class ServerApiServicer(pb_grpc.ServerApiServicer):
    def __init__(self, hub: Hub, roster: Roster) -> None:
        self._hub = hub
        self._roster = roster
        self._store = roster._store

    async def _presence_topic(self, topic: str, context: grpc.aio.ServicerContext) -> None:
        if (why := topic_error(topic)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid topic: {why}")
        if not self._roster.rules.has_presence(topic):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{topic} keeps no presence (no PUSH_PRESENCE_RULES pattern matches it)")

    async def Presence(self, request: pb.PresenceRequest, context: grpc.aio.ServicerContext) -> pb.PresenceResponse:
        await self._presence_topic(request.topic, context)
        try:
            clients = await self._store.clients(request.topic)
        except BrokerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
        return pb.PresenceResponse(clients=[pb.ClientInfo(client_id=c.client_id, user=c.user, info=c.info,
                                                          joined_ms=c.joined_ms) for c in clients])

    async def PresenceStats(self, request: pb.PresenceRequest,
                            context: grpc.aio.ServicerContext) -> pb.PresenceStatsResponse:
        await self._presence_topic(request.topic, context)
        try:
            clients, users = stats(await self._store.clients(request.topic))
        except BrokerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
        return pb.PresenceStatsResponse(num_clients=clients, num_users=users)

    async def _reports(self, context: grpc.aio.ServicerContext) -> dict[str, dict]:
        try:
            return {node: orjson.loads(r) for node, r in (await self._store.reports()).items()}
        except BrokerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
            raise  # unreachable: abort raises

    async def Channels(self, request: pb.ChannelsRequest, context: grpc.aio.ServicerContext) -> pb.ChannelsResponse:
        if len(request.pattern) > 256:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pattern is longer than 256 characters")
        counts: dict[str, int] = {}
        truncated = False
        for report in (await self._reports(context)).values():
            if report.get("kind") != "edge":
                continue
            truncated = truncated or bool(report.get("truncated"))
            for topic, subscribers in report.get("topics", {}).items():
                if not request.pattern or fnmatchcase(topic, request.pattern):
                    counts[topic] = counts.get(topic, 0) + int(subscribers)
        return pb.ChannelsResponse(channels=[pb.ChannelInfo(topic=t, subscribers=n) for t, n in sorted(counts.items())
                                             if n], truncated=truncated)

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        now_ms = int(time.time() * 1000)
        nodes = [pb.NodeInfo(kind=r.get("kind", ""), id=node, address=r.get("address", ""),
                             version=r.get("version", ""), uptime_ms=max(0, now_ms - int(r.get("started_ms", now_ms))),
                             connections=int(r.get("connections", 0)), subscriptions=int(r.get("subscriptions", 0)))
                 for node, r in (await self._reports(context)).items()]
        nodes.sort(key=lambda n: (n.kind != "push", n.id))
        return pb.InfoResponse(nodes=nodes)

    async def _target(self, user: str, client_id: str, context: grpc.aio.ServicerContext) -> dict[str, str]:
        if bool(user) == bool(client_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give exactly one of user and client_id")
        if len(user) > MAX_USER_LENGTH or len(client_id) > MAX_CLIENT_ID_LENGTH:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"user ({MAX_USER_LENGTH}) or client_id ({MAX_CLIENT_ID_LENGTH}) is too long")
        return {"user": user} if user else {"client_id": client_id}

    async def _command(self, command: dict[str, object], context: grpc.aio.ServicerContext) -> pb.CommandResponse:
        publication = Publication(topic="", client_id="", id="", timestamp_ms=int(time.time() * 1000),
                                  frame=orjson.dumps(command), kind=COMMAND)
        try:
            delivered = await self._hub.signal(publication)
        except BrokerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
        return pb.CommandResponse(delivered=delivered)

    async def Disconnect(self, request: pb.DisconnectRequest, context: grpc.aio.ServicerContext) -> pb.CommandResponse:
        target = await self._target(request.user, request.client_id, context)
        code = request.code or DISCONNECTED_BY_SERVER
        if (why := disconnect_code_error(code)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
        if len(request.reason.encode()) > MAX_REASON_BYTES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"reason is over {MAX_REASON_BYTES} bytes")
        return await self._command({"op": "disconnect", **target, "code": code,
                                    "reason": request.reason or "disconnected by the server"}, context)

    async def _subscription(self, op: str, request: pb.ServerSubscriptionRequest,
                            context: grpc.aio.ServicerContext) -> pb.CommandResponse:
        target = await self._target(request.user, request.client_id, context)
        if (why := topic_error(request.topic)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid topic: {why}")
        return await self._command({"op": op, **target, "topics": [request.topic]}, context)

    async def Subscribe(self, request: pb.ServerSubscriptionRequest,
                        context: grpc.aio.ServicerContext) -> pb.CommandResponse:
        return await self._subscription("subscribe", request, context)

    async def Unsubscribe(self, request: pb.ServerSubscriptionRequest,
                          context: grpc.aio.ServicerContext) -> pb.CommandResponse:
        return await self._subscription("unsubscribe", request, context)
