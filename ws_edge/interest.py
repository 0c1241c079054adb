"""Which topics this edge wants from the push service, as its subscribers come: the first subscriber
of a topic asks for it, and every subscriber that comes while that ask is unanswered waits for the same
answer (with it comes the topic's retained state, to every subscriber routed then; one that comes after
the state reached the edge is handed it from here)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from .core.routing import DeliveryRouter

# What to await, and the retained frames known here with their topics (a subscribe answered later
# leaves out those of topics dropped meanwhile).
Interest = tuple[list[asyncio.Future[None]], list[tuple[str, bytes]]]


class InterestChanges(Protocol):
    def change(self, *, add_topics: Sequence[str] = ...) -> asyncio.Future[None]: ...


class FirstInterests:
    def __init__(self, router: DeliveryRouter, push: InterestChanges) -> None:
        self.router = router
        self.push = push
        self._confirming: dict[str, asyncio.Future[None]] = {}  # topic -> its first-interest change

    def route(self, subscriber: Hashable, topics: Sequence[str]) -> Interest:
        """Route `topics` to a subscriber (a connection, or the admin page's tail): what to await (the
        push service applying first interests, its own or another's) and the retained frames known here."""
        first: list[str] = []
        waits: list[asyncio.Future[None]] = []
        retained_frames: list[tuple[str, bytes]] = []
        for topic in topics:
            if self.router.topics.add(topic, subscriber):
                first.append(topic)  # the push service will send its retained state, if any
                continue
            if (pending := self._confirming.get(topic)) is not None:
                waits.append(pending)  # its retained state is on the way to every subscriber routed
            # Known here already (routed before this subscriber came, maybe while the ask is still
            # unanswered): handed to it, as it will not be routed to it again.
            if (retained := self.router.sequencer.retained_frame(topic)) is not None:
                retained_frames.append((topic, retained))
        if first:
            future = self.push.change(add_topics=first)
            waits.append(future)
            for topic in first:
                self._confirming[topic] = future
            future.add_done_callback(lambda done, topics=first: self._confirmed(topics, done))
        return waits, retained_frames

    def confirmed_now(self, topic: str) -> bool:
        """Whether the push service has just applied the latest first interest in `topic` (its answer is
        being taken: what it told of the topic belongs to this subscription, not to an older one that
        was dropped and subscribed again meanwhile)."""
        future = self._confirming.get(topic)
        return future is not None and future.done()

    def applying(self, topic: str, answered_without: Callable[[asyncio.Future[None]], bool]) -> bool:
        """Whether the push service has yet to apply the latest first interest in `topic`, and no one
        waiting for it was answered without it (`answered_without`: the confirm gates' `timed_out`)."""
        future = self._confirming.get(topic)
        return future is not None and not future.done() and not answered_without(future)

    def _confirmed(self, topics: list[str], future: asyncio.Future[None]) -> None:
        for topic in topics:
            if self._confirming.get(topic) is future:
                del self._confirming[topic]
