"""The batching window: coalesce under load, never delay idle traffic.

A batch leaves as soon as one of these holds:
- it has `max_size` items, or `max_bytes` of them (`add` returns it; 0: no byte budget);
- the stream is idle, nothing waiting to be written (the caller asks with `take`): so a lone
  message is never held, and the tail of a burst leaves as soon as what came before it is sent;
- `interval` has passed since its first item (`flush_due`): the upper bound while the stream is
  busy writing earlier batches.
Time is passed in (`now`, seconds): no clock, no timers here.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class BatchWindow(Generic[T]):
    def __init__(self, max_size: int = 10, interval: float = 0.1, max_bytes: int = 0) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if interval < 0 or max_bytes < 0:
            raise ValueError("interval and max_bytes must not be negative")
        self.max_size = max_size
        self.interval = interval
        self.max_bytes = max_bytes
        self._pending: list[T] = []
        self._bytes = 0
        self._opened = 0.0
        self.taken_bytes = 0  # the size of the batch `take` returned last (what its caller queues)

    def add(self, item: T, now: float, size: int = 0) -> list[T] | None:
        """Queue `item` (of `size` bytes); returns the batch if it is now full."""
        if not self._pending:
            self._opened = now
        self._pending.append(item)
        self._bytes += size
        if len(self._pending) >= self.max_size or (self.max_bytes and self._bytes >= self.max_bytes):
            return self.take()
        return None

    def take(self) -> list[T] | None:
        """The open batch, whatever its size (the stream is idle), or None when there is none."""
        if not self._pending:
            return None
        batch, self._pending, self.taken_bytes, self._bytes = self._pending, [], self._bytes, 0
        return batch

    @property
    def deadline(self) -> float | None:
        """When the open batch must leave at the latest, or None when nothing is pending."""
        return self._opened + self.interval if self._pending else None

    def flush_due(self, now: float) -> list[T] | None:
        """The open batch if its deadline has passed."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            return self.take()
        return None

    def __len__(self) -> int:
        return len(self._pending)
