"""The batching window: up to `max_size` items or one flush per `interval`, never delaying idle traffic.

Rule: an item is flushed at once when the previous flush is at least `interval` old (the stream has
been idle), or when it fills the batch to `max_size`; otherwise it waits until `interval` after the
previous flush. So a lone message is never held, and under load flushes come at most once per
`interval` unless batches fill. Time is passed in (`now`, seconds): no clock, no timers here.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class BatchWindow(Generic[T]):
    def __init__(self, max_size: int = 10, interval: float = 0.1) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.max_size = max_size
        self.interval = interval
        self._pending: list[T] = []
        self._last_flush = float("-inf")

    def add(self, item: T, now: float) -> list[T] | None:
        """Queue `item`; returns the batch to send now, if one is due."""
        self._pending.append(item)
        if len(self._pending) >= self.max_size or now - self._last_flush >= self.interval:
            return self._take(now)
        return None

    @property
    def deadline(self) -> float | None:
        """When the pending items must leave, or None when nothing is pending."""
        return self._last_flush + self.interval if self._pending else None

    def flush_due(self, now: float) -> list[T] | None:
        """The pending batch if its deadline has passed."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            return self._take(now)
        return None

    def __len__(self) -> int:
        return len(self._pending)

    def _take(self, now: float) -> list[T]:
        batch, self._pending = self._pending, []
        self._last_flush = now
        return batch
