"""The push service's server API (push.v1.ServerApi, issue 15) for backends: `PushClient(...).server`.

Every call is cluster-wide, whichever replica it reaches. Errors raise with the gRPC
status (`ServerApiError`: INVALID_ARGUMENT, FAILED_PRECONDITION for a topic without presence, UNAVAILABLE).
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
from push.v1 import server_api_pb2 as pb
from push.v1 import server_api_pb2_grpc as pb_grpc


class ServerApiError(Exception):
    """A refused server API call: the gRPC status and why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class ServerApi:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self.stub = pb_grpc.ServerApiStub(channel)
        self.timeout = timeout

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise ServerApiError(exc.code(), exc.details() or "") from None

    async def presence(self, topic: str) -> list[dict[str, Any]]:
        """The topic's clients in join order: {client_id, user (None: anonymous), joined (ms), info}."""
        answer = await self._call("Presence", pb.PresenceRequest(topic=topic))
        return [{"client_id": c.client_id, "user": c.user or None, "joined": c.joined_ms,
                 "info": orjson.loads(c.info) if c.info else None} for c in answer.clients]

    async def presence_stats(self, topic: str) -> dict[str, int]:
        answer = await self._call("PresenceStats", pb.PresenceRequest(topic=topic))
        return {"clients": answer.num_clients, "users": answer.num_users}

    async def channels(self, pattern: str = "") -> dict[str, int]:
        """Active topics matching `pattern` (a glob), with their subscribers, by topic."""
        answer = await self._call("Channels", pb.ChannelsRequest(pattern=pattern))
        return {c.topic: c.subscribers for c in answer.channels}

    async def info(self) -> list[dict[str, Any]]:
        """Every live push replica and edge: kind, id, address, version, uptime_ms, connections, subscriptions."""
        answer = await self._call("Info", pb.InfoRequest())
        return [{"kind": n.kind, "id": n.id, "address": n.address, "version": n.version, "uptime_ms": n.uptime_ms,
                 "connections": n.connections, "subscriptions": n.subscriptions} for n in answer.nodes]

    async def disconnect(self, *, user: str = "", client_id: str = "", code: int = 0, reason: str = "") -> bool:
        """Close the user's (or the client id's) connections on every edge; whether any edge was reached."""
        request = pb.DisconnectRequest(user=user, client_id=client_id, code=code, reason=reason)
        return (await self._call("Disconnect", request)).delivered

    async def subscribe(self, topic: str, *, user: str = "", client_id: str = "") -> bool:
        request = pb.ServerSubscriptionRequest(user=user, client_id=client_id, topic=topic)
        return (await self._call("Subscribe", request)).delivered

    async def unsubscribe(self, topic: str, *, user: str = "", client_id: str = "") -> bool:
        request = pb.ServerSubscriptionRequest(user=user, client_id=client_id, topic=topic)
        return (await self._call("Unsubscribe", request)).delivered
