"""An example backend implementing hooks.v1.BackendHooks with grpc.aio: the application's side of the
edge's hooks (README: Refresh and backend hooks). The integration tests start it as a real process.

    EXAMPLE_HOOKS_PORT=50060 python -m examples.hooks_backend

Its rules are a toy application's, made to show every answer:
- Connect: a `session=<user>` cookie signs the user in (no JWT needed), else the token's `sub`;
  neither: refused (let in anonymously with EXAMPLE_ALLOW_ANONYMOUS=true). Users named `banned*` are refused; `slow*` take EXAMPLE_SLOW_SECONDS to answer.
  Every user also gets `inbox:<user>` subscribed; a cookie session expires after EXAMPLE_SESSION_TTL.
- Subscribe: `room:open*` for anyone; another `room:*` only with `{"password": "open-sesame"}`;
  `room:slow*` is slow.
- Publish: on `chat:*`, "darn" becomes "d**n" (changed data), anything with "spam" is refused,
  `chat:slow*` is slow.
- Refresh: `EXAMPLE_SESSION_TTL` more seconds, except for users named `expired*` (refused);
  `lazy*` are slow to refresh.
- RPC: `echo` (the data back), `whoami` (user and info), `sleep` (`{"seconds": s}`), others NOT_FOUND.
`Stats` is not a hook: the calls seen and the most in flight at once, per hook (GET-like, for tests),
served as RPC method `stats` when called directly (not through the edge).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hooks.v1 import hooks_pb2 as pb
from hooks.v1 import hooks_pb2_grpc as pb_grpc

log = logging.getLogger("hooks_backend")
SLOW = float(os.environ.get("EXAMPLE_SLOW_SECONDS", "10"))
SESSION_TTL = float(os.environ.get("EXAMPLE_SESSION_TTL", "60"))
# Connections with neither a cookie nor a token are let in anonymously (bench/e2e.py's connect rounds).
ALLOW_ANONYMOUS = os.environ.get("EXAMPLE_ALLOW_ANONYMOUS", "") == "true"


def _cookie_user(headers: dict[str, str]) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "session" and value:
            return value
    return None


def _refuse(code: str, reason: str) -> pb.Refusal:
    return pb.Refusal(code=code, reason=reason)


class Hooks(pb_grpc.BackendHooksServicer):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight: Counter[str] = Counter()

    async def _counted(self, hook: str, work: Callable[[], Awaitable[Any]]) -> Any:
        self.calls[hook] += 1
        self.in_flight[hook] += 1
        self.most_in_flight[hook] = max(self.most_in_flight[hook], self.in_flight[hook])
        try:
            return await work()
        finally:
            self.in_flight[hook] -= 1

    async def Connect(self, request: pb.ConnectRequest, context: Any) -> pb.ConnectResponse:
        return await self._counted("connect", lambda: self._connect(request))

    async def _connect(self, request: pb.ConnectRequest) -> pb.ConnectResponse:
        cookie_user = _cookie_user(dict(request.headers))
        claims = orjson.loads(request.token_claims) if request.token_claims else None
        user = cookie_user or (claims or {}).get("sub")
        if not user and ALLOW_ANONYMOUS:
            return pb.ConnectResponse(allow=pb.ConnectAllow())
        if not user:
            return pb.ConnectResponse(refuse=_refuse("UNAUTHORIZED", "no session cookie and no token"))
        if user.startswith("banned"):
            return pb.ConnectResponse(refuse=_refuse("FORBIDDEN", f"{user} is banned"))
        if user.startswith("slow"):
            await asyncio.sleep(SLOW)
        info = orjson.dumps({"via": "cookie" if cookie_user else "token", "transport": request.transport})
        expires_at = time.time() + SESSION_TTL if cookie_user else 0.0
        return pb.ConnectResponse(allow=pb.ConnectAllow(user=user, info=info, topics=[f"inbox:{user}"],
                                                        expires_at=expires_at))

    async def Subscribe(self, request: pb.SubscribeRequest, context: Any) -> pb.SubscribeResponse:
        return await self._counted("subscribe", lambda: self._subscribe(request))

    async def _subscribe(self, request: pb.SubscribeRequest) -> pb.SubscribeResponse:
        topic = request.topic
        if topic.startswith("room:slow"):
            await asyncio.sleep(SLOW)
        data = orjson.loads(request.data) if request.data else None
        if topic.startswith("room:open") or (isinstance(data, dict) and data.get("password") == "open-sesame"):
            return pb.SubscribeResponse(allow=pb.Allow())
        return pb.SubscribeResponse(refuse=_refuse("FORBIDDEN", "members only"))

    async def Publish(self, request: pb.PublishRequest, context: Any) -> pb.PublishResponse:
        return await self._counted("publish", lambda: self._publish(request))

    async def _publish(self, request: pb.PublishRequest) -> pb.PublishResponse:
        if request.topic.startswith("chat:slow"):
            await asyncio.sleep(SLOW)
        text = request.data.decode()
        if "spam" in text:
            return pb.PublishResponse(refuse=_refuse("FORBIDDEN", "looks like spam"))
        if "darn" in text:
            return pb.PublishResponse(allow=pb.PublishAllow(data=text.replace("darn", "d**n").encode()))
        return pb.PublishResponse(allow=pb.PublishAllow())

    async def Refresh(self, request: pb.RefreshRequest, context: Any) -> pb.RefreshResponse:
        return await self._counted("refresh", lambda: self._refresh(request))

    async def _refresh(self, request: pb.RefreshRequest) -> pb.RefreshResponse:
        if request.caller.user.startswith("lazy"):
            await asyncio.sleep(SLOW)
        if request.caller.user.startswith("expired"):
            return pb.RefreshResponse(refuse=_refuse("FORBIDDEN", "signed out"))
        return pb.RefreshResponse(allow=pb.RefreshAllow(expires_at=time.time() + SESSION_TTL))

    async def RPC(self, request: pb.RPCRequest, context: Any) -> pb.RPCResponse:
        if request.method == "stats":  # the tests' view of this backend, not counted
            stats = {"calls": dict(self.calls), "in_flight": dict(self.in_flight),
                     "most_in_flight": dict(self.most_in_flight)}
            return pb.RPCResponse(result=pb.RPCResult(data=orjson.dumps(stats)))
        return await self._counted("rpc", lambda: self._rpc(request))

    async def _rpc(self, request: pb.RPCRequest) -> pb.RPCResponse:
        data = orjson.loads(request.data) if request.data else None
        if request.method == "echo":
            return pb.RPCResponse(result=pb.RPCResult(data=request.data))
        if request.method == "whoami":
            caller = request.caller
            info = orjson.loads(caller.info) if caller.info else None
            result = {"user": caller.user or None, "info": info, "client_id": caller.client_id}
            return pb.RPCResponse(result=pb.RPCResult(data=orjson.dumps(result)))
        if request.method == "sleep":
            await asyncio.sleep(float(data.get("seconds", 1)) if isinstance(data, dict) else 1.0)
            return pb.RPCResponse(result=pb.RPCResult(data=b'"slept"'))
        return pb.RPCResponse(error=_refuse("NOT_FOUND", f"no method {request.method!r}"))


async def serve(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_BackendHooksServicer_to_server(Hooks(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("hooks backend on 127.0.0.1:%d", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(serve(int(os.environ.get("EXAMPLE_HOOKS_PORT", "50060"))))
