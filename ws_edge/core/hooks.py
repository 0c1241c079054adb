"""Backend hooks as the session sees them: what to ask the application's backend, and its answer.

The session (core/session.py) decides *when* a hook is asked (a connection opening, a subscribe to a
hooked topic, a browser's `publish` or `rpc`, a token about to expire) and what the answer means;
the driver carries out the call (ws_edge/hook_client.py, gRPC `hooks.v1.BackendHooks`) and feeds the
answer back. A call that times out, finds the backend down or over the edge's bound of calls in
flight is UNAVAILABLE, and UNAVAILABLE never allows: a connect closes 4503, a subscribe / publish /
rpc gets an `UNAVAILABLE` error frame, a refresh does not extend the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .codes import ErrorCode


class Hook(StrEnum):
    CONNECT = "connect"
    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"
    REFRESH = "refresh"
    RPC = "rpc"


class Outcome(StrEnum):
    ALLOW = "allow"
    REFUSE = "refuse"
    UNAVAILABLE = "unavailable"  # timed out, backend down, too many calls in flight: never an allow


@dataclass(frozen=True, slots=True)
class HookCall:
    """One question for the backend; the driver adds what only it knows (client id, transport,
    address, headers)."""

    hook: Hook
    user: str | None = None
    topic: str = ""
    method: str = ""
    data: bytes = b""  # JSON: a subscribe's / publish's / rpc's payload
    claims: Mapping[str, Any] | None = None  # connect: the verified token's claims (None: no token)
    info: bytes = b""  # what the Connect hook attached to the connection (JSON), given back to every hook


@dataclass(frozen=True, slots=True)
class HookAnswer:
    outcome: Outcome
    code: ErrorCode = ErrorCode.FORBIDDEN  # a refusal's error code (connect: the close is 4003 regardless)
    reason: str = ""
    user: str | None = None  # connect: who the backend says it is (None: keep the token's, or anonymous)
    info: bytes = b""  # connect
    topics: tuple[str, ...] = ()  # connect: subscribed for the connection without the topic rules
    expires_at: float | None = None  # connect, refresh: Unix seconds (None: no expiry / unchanged)
    data: bytes | None = None  # publish: changed data (None: as sent); rpc: the result (JSON)

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


def unavailable(reason: str) -> HookAnswer:
    return HookAnswer(Outcome.UNAVAILABLE, ErrorCode.UNAVAILABLE, reason)


def _never(_: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class HookRules:
    """Which hooks this edge asks: per edge (connect, refresh, rpc) or per topic pattern."""

    connect: bool = False
    refresh: bool = False
    rpc: bool = False  # the `rpc` message type
    rpc_unknown_types: bool = False  # message types without a handler go to the RPC hook (method = type)
    subscribe: Callable[[str], bool] = field(default=_never)
    publish: Callable[[str], bool] = field(default=_never)


NO_HOOKS = HookRules()
