"""The edge's side of hooks.v1.BackendHooks: the session's HookCall as a gRPC call, with a deadline
and a bound of calls in flight per hook, and the reply as a HookAnswer.

Every way a call can fail is an UNAVAILABLE answer, never an allow: the deadline passing, the backend
down or refusing the connection, any gRPC status, more calls in flight than EDGE_HOOK_MAX_IN_FLIGHT
(refused at once rather than queued: a backend that is slow must not pile up waiting sessions, and
the client retries with backoff), a reply that breaks the contract (data that is not JSON, a bad topic).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
from hooks.v1 import hooks_pb2 as pb
from hooks.v1 import hooks_pb2_grpc as pb_grpc

from common.grpc_security import secure_channel
from common.topics import topic_error

from . import metrics
from .core.codes import ErrorCode
from .core.hooks import Hook, HookAnswer, HookCall, Outcome, unavailable

log = logging.getLogger("ws_edge.hooks")
# The codes a backend's refusal may carry to a browser; any other is FORBIDDEN.
REFUSAL_CODES = frozenset({ErrorCode.FORBIDDEN, ErrorCode.UNAUTHORIZED, ErrorCode.NOT_FOUND, ErrorCode.INVALID_MESSAGE,
                           ErrorCode.TOO_MANY_TASKS, ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED})


# No keepalive pings (the push link's options): an application's gRPC server keeps its default
# minimum ping interval (5 min) and would answer frequent pings with GOAWAY; each call's deadline is
# what finds a dead backend. Reconnects are quick, so a restarted backend is back within 2 s.
HOOK_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 2_000)]


class ContractError(Exception):
    """The backend's reply breaks the contract (treated as UNAVAILABLE)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """What the driver knows of the connection, beside the session's call."""

    client_id: str
    transport: str = "websocket"
    remote_address: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


class HookClient:
    def __init__(self, address: str, timeout: float, max_in_flight: int, token: str | None = None) -> None:
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._address, self._token = address, token
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.BackendHooksStub | None = None
        self.in_flight = dict.fromkeys(Hook, 0)

    def open(self) -> None:
        """The channel, made on the serving loop (a grpc.aio channel belongs to the loop it was made on)."""
        self._channel = secure_channel(self._address, token=self._token, options=HOOK_CHANNEL_OPTIONS)
        self._stub = pb_grpc.BackendHooksStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def call(self, call: HookCall, caller: Caller) -> HookAnswer:
        hook = call.hook
        if self._stub is None:
            return unavailable(f"{hook} hook: not started")
        if self.in_flight[hook] >= self.max_in_flight:
            answer = unavailable(f"{hook} hook: {self.max_in_flight} calls in flight already")
            metrics.HOOK_CALLS.labels(hook.value, answer.outcome.value).inc()
            return answer
        self.in_flight[hook] += 1
        started = time.perf_counter()
        try:
            method, request = _request(self._stub, call, caller)
            reply = await method(request, timeout=self.timeout)
            answer = _answer(hook, reply)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            why = f"timed out after {self.timeout:g} s" if code is grpc.StatusCode.DEADLINE_EXCEEDED else (
                f"{code.name}: {exc.details()}")
            answer = unavailable(f"{hook} hook {why}")
        except ContractError as exc:
            log.warning("%s hook: %s", hook, exc)
            answer = unavailable(f"{hook} hook: {exc}")
        finally:
            self.in_flight[hook] -= 1
            metrics.HOOK_SECONDS.labels(hook.value).observe(time.perf_counter() - started)
        metrics.HOOK_CALLS.labels(hook.value, answer.outcome.value).inc()
        return answer


def _caller(call: HookCall, caller: Caller) -> pb.Caller:
    return pb.Caller(client_id=caller.client_id, user=call.user or "", info=call.info, transport=caller.transport)


def _request(stub: pb_grpc.BackendHooksStub, call: HookCall, caller: Caller) -> tuple[Any, Any]:
    hook = call.hook
    if hook is Hook.CONNECT:
        claims = orjson.dumps(dict(call.claims)) if call.claims is not None else b""
        return stub.Connect, pb.ConnectRequest(client_id=caller.client_id, transport=caller.transport,
                                               remote_address=caller.remote_address, headers=dict(caller.headers),
                                               token_claims=claims)
    if hook is Hook.SUBSCRIBE:
        return stub.Subscribe, pb.SubscribeRequest(caller=_caller(call, caller), topic=call.topic, data=call.data)
    if hook is Hook.PUBLISH:
        return stub.Publish, pb.PublishRequest(caller=_caller(call, caller), topic=call.topic, data=call.data)
    if hook is Hook.REFRESH:
        return stub.Refresh, pb.RefreshRequest(caller=_caller(call, caller))
    return stub.RPC, pb.RPCRequest(caller=_caller(call, caller), method=call.method, data=call.data)


def _refusal(refusal: pb.Refusal) -> HookAnswer:
    code = ErrorCode(refusal.code) if refusal.code in REFUSAL_CODES else ErrorCode.FORBIDDEN
    return HookAnswer(Outcome.REFUSE, code, refusal.reason[:200])


def _json(data: bytes) -> bytes:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ContractError("the backend's data is not JSON") from None
    return data


def _answer(hook: Hook, reply: Any) -> HookAnswer:
    which = reply.WhichOneof("outcome" if hook is Hook.RPC else "result")
    if which is None:
        raise ContractError("the reply has neither an allow nor a refusal")
    if which in ("refuse", "error"):
        return _refusal(getattr(reply, which))
    if hook is Hook.CONNECT:
        return _connect_allow(reply.allow)
    if hook is Hook.PUBLISH:
        allow = reply.allow
        return HookAnswer(Outcome.ALLOW, data=_json(allow.data) if allow.HasField("data") else None)
    if hook is Hook.REFRESH:
        return HookAnswer(Outcome.ALLOW, expires_at=reply.allow.expires_at or None)
    if hook is Hook.RPC:
        return HookAnswer(Outcome.ALLOW, data=_json(reply.result.data) if reply.result.data else None)
    return HookAnswer(Outcome.ALLOW)


def _connect_allow(allow: pb.ConnectAllow) -> HookAnswer:
    user = allow.user or None
    if user is not None and (len(user) > 100 or not user.isprintable()):
        raise ContractError("the user must be 1 to 100 printable characters")
    for topic in allow.topics:
        if (why := topic_error(topic)) is not None:
            raise ContractError(f"topic: {why}")
    info = _json(allow.info) if allow.info else b""
    return HookAnswer(Outcome.ALLOW, user=user, info=info, topics=tuple(dict.fromkeys(allow.topics)),
                      expires_at=allow.expires_at or None)
