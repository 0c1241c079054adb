"""When a connection's credentials run out, and when to warn the client before they do.

One deadline for the connection's token (key None) and one per topic subscribed with a
subscription token. A deadline comes due twice: `notice` seconds before it (the client is told
`refresh_required`, or the Refresh hook is asked) and at its expiry. No clock here: the caller
passes the wall time (Unix seconds, as a JWT's `exp`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Deadline:
    expires_at: float
    noticed: bool = False


class Deadlines:
    __slots__ = ("_at", "notice")  # one per connection

    def __init__(self, notice: float) -> None:
        self.notice = notice
        self._at: dict[str | None, _Deadline] = {}

    def set(self, key: str | None, expires_at: float | None, wall: float | None = None) -> None:
        """A new expiry for `key` (None: the connection's token). A credential that already lies
        inside its notice window when it is given is not noticed again at once (its holder just
        refreshed it); the holder learns its expiry from the answer instead."""
        if expires_at is None:
            self._at.pop(key, None)
            return
        noticed = wall is not None and expires_at - self.notice <= wall
        self._at[key] = _Deadline(expires_at, noticed)

    def drop(self, key: str | None) -> None:
        self._at.pop(key, None)

    def expires_at(self, key: str | None) -> float | None:
        deadline = self._at.get(key)
        return None if deadline is None else deadline.expires_at

    def due(self, wall: float) -> tuple[list[str | None], list[str | None]]:
        """What comes due at `wall`: (keys to notice now, keys expired). Expired keys are dropped."""
        notices: list[str | None] = []
        expired: list[str | None] = []
        for key, deadline in list(self._at.items()):
            if deadline.expires_at <= wall:
                expired.append(key)
                del self._at[key]
            elif not deadline.noticed and deadline.expires_at - self.notice <= wall:
                deadline.noticed = True
                notices.append(key)
        return notices, expired

    def next_due(self) -> float | None:
        """The wall time of the next notice or expiry (the driver sets a timer for it)."""
        times = [d.expires_at if d.noticed else d.expires_at - self.notice for d in self._at.values()]
        return min(times, default=None)
