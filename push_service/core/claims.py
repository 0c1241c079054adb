"""Who owns each client_id a browser chose (the memory engine's; the Redis engine keeps them in Redis).
Time is passed in.

A chosen client_id addresses personal messages, so it is bound to the owner that first claimed it
(a user id; "" for anonymous connections, who share one identity) until `hold` seconds after its
last claim or refresh: another owner's claim is refused meanwhile, whether the owner is connected
or away. Expired bindings are forgotten as later calls pass them (the oldest first).
"""

from __future__ import annotations

ANONYMOUS_OWNER = ""  # a token's `sub` is never empty


class ClientIdClaims:
    def __init__(self) -> None:
        # client_id -> (owner, expires at), one table per hold (users', anonymous'), each in the order
        # of its entries' last claim or refresh: with one hold per table, the first to expire come first.
        self._users: dict[str, tuple[str, float]] = {}
        self._anonymous: dict[str, tuple[str, float]] = {}

    def _table(self, owner: str) -> dict[str, tuple[str, float]]:
        return self._anonymous if owner == ANONYMOUS_OWNER else self._users

    def claim(self, client_id: str, owner: str, now: float, hold: float) -> bool:
        """Bind `client_id` to `owner` for `hold` seconds from now, unless another owner holds it;
        True when bound (newly, or again: the hold starts over)."""
        self._expire(now)
        held = self._users.get(client_id) or self._anonymous.get(client_id)
        if held is not None and held[1] > now and held[0] != owner:
            return False
        self._users.pop(client_id, None)
        self._anonymous.pop(client_id, None)
        self._table(owner)[client_id] = (owner, now + hold)
        return True

    def refresh(self, client_ids: list[str], now: float, hold: float, anonymous_hold: float) -> None:
        """The hold of each bound id starts over (its owner still uses it): `anonymous_hold` for the
        anonymous owner's; unbound ids stay unbound."""
        self._expire(now)
        for client_id in client_ids:
            for table, seconds in ((self._users, hold), (self._anonymous, anonymous_hold)):
                held = table.pop(client_id, None)
                if held is not None:
                    table[client_id] = (held[0], now + seconds)

    def owner(self, client_id: str, now: float) -> str | None:
        held = self._users.get(client_id) or self._anonymous.get(client_id)
        return held[0] if held is not None and held[1] > now else None

    def _expire(self, now: float) -> None:
        for table in (self._users, self._anonymous):
            while table:
                client_id, (_, expires) = next(iter(table.items()))
                if expires > now:
                    break
                del table[client_id]

    def __len__(self) -> int:
        return len(self._users) + len(self._anonymous)
