"""Recently used idempotency keys and the ack of their first publication (the memory engine's; the
Redis engine keeps them in Redis). Time is passed in.

Only what a repeat is answered with is kept (an `Ack`: id, timestamp, position), never the message.
Bounded three times: entries older than `window` seconds are forgotten, and at most `max_keys` and
`max_bytes` (key and ack, with a per-entry overhead) are kept, the oldest going first. A key forgotten
early can only mean a repeat is delivered again, never that a message is lost.
"""

from __future__ import annotations

from collections import OrderedDict

from .publication import Ack

# What an entry costs beyond its key's and its ack's strings (the dict slot, the tuple, the Ack): an
# estimate (tracemalloc: ~340 bytes an entry with short strings), so that many short keys count too.
ENTRY_OVERHEAD = 320


def entry_bytes(key: str, ack: Ack) -> int:
    return ENTRY_OVERHEAD + len(key) + len(ack.id) + len(ack.epoch)


class IdempotencyCache:
    def __init__(self, window: float = 300.0, max_keys: int = 100_000, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.window = window
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[float, Ack]] = OrderedDict()

    def get(self, key: str, now: float) -> Ack | None:
        self.expire(now)
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def remember(self, key: str, first: Ack, now: float) -> None:
        self._drop(key)
        self._entries[key] = (now, first)
        self.bytes += entry_bytes(key, first)
        self.expire(now)
        while len(self._entries) > self.max_keys or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def expire(self, now: float) -> None:
        """Forget keys older than the window (called on every use, and periodically by the engine)."""
        while self._entries:
            key, (at, _) = next(iter(self._entries.items()))
            if now - at < self.window:
                break
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry_bytes(key, entry[1])

    def __len__(self) -> int:
        return len(self._entries)
