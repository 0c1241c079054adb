"""Connection limits: concurrent connections per key (user, address) and attempts per second per
address. Time is passed in; the tables stay bounded."""

from __future__ import annotations

from urllib.parse import urlsplit

from .ratelimit import TokenBucket


class ConnectionCounter:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def acquire(self, key: str, limit: int) -> bool:
        count = self._counts.get(key, 0)
        if count >= limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def __getitem__(self, key: str) -> int:
        return self._counts.get(key, 0)


class AttemptLimiter:
    """A token bucket per address; buckets that have refilled are dropped when the table is large."""

    def __init__(self, rate: float, burst: int, max_addresses: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, address: str, now: float) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._prune(now)
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
        return bucket.allow(now)

    def _prune(self, now: float) -> None:
        full = [a for a, b in self._buckets.items() if b.full(now)]
        for address in full:
            del self._buckets[address]
        while len(self._buckets) >= self.max_addresses:  # still too many: forget the oldest
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """The handshake's Origin check (cross-site WebSocket hijacking). No Origin: not a browser, allowed.
    With an allow-list (`allowed`; "*" allows any), only the list counts: the request's own `Host` is
    chosen by whoever sends it, so a DNS-rebinding page (`Host: evil:8000`, `Origin: http://evil:8000`)
    would pass a same-host comparison. Without a list, the page's own origin (same host) is allowed."""
    if origin is None:
        return True
    if allowed:
        return "*" in allowed or origin in allowed
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


class PendingConnections:
    """Connections that have not finished their first request (a WebSocket handshake or an HTTP
    request), per address and in total. Each holds a descriptor while it says nothing: these bounds,
    with the edge's handshake timeout, keep silent sockets from locking real clients out."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.limit = total
        self._by_address = ConnectionCounter()
        self.total = 0

    def admit(self, address: str) -> str | None:
        """Count a new connection from `address`, or say why not: "address" (over its own bound) or
        "total" (over the edge's)."""
        if self.total >= self.limit:
            return "total"
        if not self._by_address.acquire(address, self.per_address):
            return "address"
        self.total += 1
        return None

    def release(self, address: str) -> None:
        self._by_address.release(address)
        self.total -= 1

    def __getitem__(self, address: str) -> int:
        return self._by_address[address]
