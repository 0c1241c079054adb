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
        # client_id -> (owner, expires at); in the order of their last claim or refresh, so with one
        # hold for all of them the first to expire come first.
        self._held: dict[str, tuple[str, float]] = {}

    def claim(self, client_id: str, owner: str, now: float, hold: float) -> bool:
        """Bind `client_id` to `owner` for `hold` seconds from now, unless another owner holds it;
        True when bound (newly, or again: the hold starts over)."""
        self._expire(now)
        held = self._held.get(client_id)
        if held is not None and held[1] > now and held[0] != owner:
            return False
        self._held.pop(client_id, None)
        self._held[client_id] = (owner, now + hold)
        return True

    def refresh(self, client_ids: list[str], now: float, hold: float) -> None:
        """The hold of each bound id starts over (its owner still uses it); unbound ids stay unbound."""
        self._expire(now)
        for client_id in client_ids:
            held = self._held.pop(client_id, None)
            if held is not None:
                self._held[client_id] = (held[0], now + hold)

    def owner(self, client_id: str, now: float) -> str | None:
        held = self._held.get(client_id)
        return held[0] if held is not None and held[1] > now else None

    def _expire(self, now: float) -> None:
        while self._held:
            client_id, (_, expires) = next(iter(self._held.items()))
            if expires > now:
                break
            del self._held[client_id]

    def __len__(self) -> int:
        return len(self._held)
