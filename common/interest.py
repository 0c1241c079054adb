"""Who is interested in what: keys (topics, client ids) to subscribers, reporting first/last interest.

The push service keeps one per edge stream set (topic -> edges), the edge one per connection set
(topic -> connections); both forward interest upstream only on the first and the last subscriber.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
S = TypeVar("S", bound=Hashable)

_EMPTY: frozenset = frozenset()


class InterestTable(Generic[K, S]):
    def __init__(self) -> None:
        self._by_key: dict[K, set[S]] = {}
        self._by_subscriber: dict[S, set[K]] = {}

    def add(self, key: K, subscriber: S) -> bool:
        """Record interest; True when `key` had no subscriber before (first interest)."""
        subscribers = self._by_key.get(key)
        first = subscribers is None
        if subscribers is None:
            subscribers = self._by_key[key] = set()
        subscribers.add(subscriber)
        self._by_subscriber.setdefault(subscriber, set()).add(key)
        return first

    def remove(self, key: K, subscriber: S) -> bool:
        """Drop interest; True when `key` has no subscriber left (last interest gone)."""
        subscribers = self._by_key.get(key)
        if subscribers is None or subscriber not in subscribers:
            return False
        subscribers.discard(subscriber)
        keys = self._by_subscriber.get(subscriber)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_subscriber[subscriber]
        if not subscribers:
            del self._by_key[key]
            return True
        return False

    def remove_subscriber(self, subscriber: S) -> list[K]:
        """Drop every interest of `subscriber`; returns the keys left with no subscriber."""
        emptied = []
        for key in list(self._by_subscriber.get(subscriber, ())):
            if self.remove(key, subscriber):
                emptied.append(key)
        return emptied

    def subscribers(self, key: K) -> set[S] | frozenset:
        return self._by_key.get(key, _EMPTY)

    def keys_of(self, subscriber: S) -> set[K] | frozenset:
        return self._by_subscriber.get(subscriber, _EMPTY)

    def keys(self) -> Iterable[K]:
        return self._by_key.keys()

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)
