"""The embedded engine: one process, no network. Delivery is a direct call."""

from __future__ import annotations

from ..core.publication import Publication
from .base import Broker, PublicationHandler


class MemoryBroker(Broker):
    def __init__(self) -> None:
        self._handler: PublicationHandler | None = None
        self._channels: set[str] = set()
        self._retained: dict[str, Publication] = {}

    async def start(self, on_publication: PublicationHandler) -> None:
        self._handler = on_publication

    async def publish(self, publication: Publication) -> None:
        if publication.retain:
            self._retained[publication.topic] = publication
        if self._handler is not None and publication.channel in self._channels:
            self._handler(publication)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def retained(self, topic: str) -> Publication | None:
        return self._retained.get(topic)

    async def close(self) -> None:
        self._handler = None
        self._channels.clear()
