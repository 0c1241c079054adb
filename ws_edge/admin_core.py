"""The admin API's decisions without I/O (ws_edge/admin.py): who is let in, rates, tail events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

MIN_RATE_INTERVAL = 1.0  # seconds between the samples a rate is taken over (several pages may poll)


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str


MISSING = Refusal(401, "admin_credential_required",
                  "the admin API needs the admin token: Authorization: Bearer <EDGE_ADMIN_TOKEN>")
WRONG = Refusal(403, "not_admin", "this credential does not open the admin API (a user's token never does)")


def credential_refusal(authorization: str | None, secret: str, equal: Callable[[bytes, bytes], bool]) -> Refusal | None:
    """None when `authorization` is `Bearer <secret>`; else why not. `equal` compares in constant
    time (hmac.compare_digest), so the answer's timing says nothing of how much of a guess was right."""
    if not authorization:
        return MISSING
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return MISSING
    return None if equal(credential.strip().encode(), secret.encode()) else WRONG


class RateMeter:
    """Per-second rates of counters between reads at least MIN_RATE_INTERVAL apart (None before)."""

    def __init__(self) -> None:
        self._previous: tuple[float, dict[str, float]] | None = None
        self._rates: dict[str, float] | None = None

    def rates(self, now: float, counters: Mapping[str, float]) -> dict[str, float] | None:
        if self._previous is None:
            self._previous = (now, dict(counters))
            return None
        then, before = self._previous
        if now - then >= MIN_RATE_INTERVAL:
            self._rates = {name: max(0.0, (value - before.get(name, value)) / (now - then))
                           for name, value in counters.items()}
            self._previous = (now, dict(counters))
        return self._rates


def tail_events(event: str, data: bytes | dict, dropped: int = 0) -> bytes:
    """One Server-Sent Event of the admin tail: `ready` ({topic, edge}), or `frame` (a server frame
    as the edge's subscribers get it: a message or a batch of them). `dropped`: frames the tail lost
    because the page read too slowly (sent as the event's id, so the page can say so)."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = f"event: {event}\n" + (f"id: dropped-{dropped}\n" if dropped else "")
    return head.encode() + b"data: " + payload.replace(b"\n", b"\ndata: ") + b"\n\n"
