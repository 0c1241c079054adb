"""Brokers carry publications between push replicas. Chosen by URL: `memory://` (embedded default)."""

from __future__ import annotations

from ..core.history import HistoryPolicy
from .base import Broker, PublicationHandler
from .memory import MemoryBroker


def broker_from_url(url: str, history: HistoryPolicy | None = None) -> Broker:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        return MemoryBroker(history)
    raise ValueError(f"unsupported broker URL {url!r}: expected memory://")


__all__ = ["Broker", "MemoryBroker", "PublicationHandler", "broker_from_url"]
