"""Brokers carry publications between push replicas. Chosen by URL: `memory://` (embedded default)
or `redis://host:port/db`."""

from __future__ import annotations

from ..core.history import HistoryPolicy
from ..core.idempotency import IdempotencyCache
from .base import Broker, PublicationHandler
from .memory import MemoryBroker


def broker_from_url(
    url: str,
    history: HistoryPolicy | None = None,
    prefix: str = "push",
    idempotency_window: float = 300.0,
    idempotency_max_keys: int = 100_000,
) -> Broker:
    """`memory://` (one process) or `redis://host:port/db` (replicas sharing topics)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        return MemoryBroker(history, IdempotencyCache(idempotency_window, idempotency_max_keys))
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker

        return RedisBroker(url, history, prefix=prefix, idempotency_window=idempotency_window)
    raise ValueError(f"unsupported broker URL {url!r}: expected memory:// or redis://host:port/db")


__all__ = ["Broker", "MemoryBroker", "PublicationHandler", "broker_from_url"]
