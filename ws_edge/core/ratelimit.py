"""Token bucket for the per-client message rate; time is passed in."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; each message takes one."""

    __slots__ = ("rate", "burst", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def allow(self, now: float, cost: float = 1) -> bool:
        """Take `cost` tokens if there are that many (an expensive request costs more than one)."""
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._updated = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled completely (so forgetting it changes nothing)."""
        return self._tokens + (now - self._updated) * self.rate >= self.burst
