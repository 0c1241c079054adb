"""Recently used idempotency keys and their first publication (the memory engine's; the Redis engine
keeps them in Redis). Time is passed in.

Bounded twice: entries older than `window` seconds are forgotten, and at most `max_keys` are kept
(the oldest go first). A key forgotten early can only mean a repeat is delivered again, never that
a message is lost.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class IdempotencyCache:
    def __init__(self, window: float = 300.0, max_keys: int = 100_000) -> None:
        self.window = window
        self.max_keys = max_keys
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str, now: float) -> Any | None:
        self._expire(now)
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def remember(self, key: str, first: Any, now: float) -> None:
        self._entries[key] = (now, first)
        self._entries.move_to_end(key)
        self._expire(now)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (at, _) = next(iter(self._entries.items()))
            if now - at < self.window:
                break
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
