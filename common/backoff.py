"""Reconnect delays: exponential with full jitter, capped. No clock, no sleeping: the caller sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; the first retry waits `initial` (no jitter)."""
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        if self.attempt == 1:
            return self.initial
        return self.rng.uniform(self.initial, ceiling)

    def reset(self) -> None:
        self.attempt = 0
