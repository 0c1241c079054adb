"""Brokers carry publications between push replicas. Chosen by URL: `memory://` (embedded default),
`redis://host:port/db`, or `redis+cluster://host:port,host:port` (a Redis Cluster, sharded pub/sub)."""

from __future__ import annotations

from ..core.history import HistoryPolicy
from ..core.idempotency import IdempotencyCache
from .base import Broker, EngineEvents, PublicationHandler
from .memory import MemoryBroker


def broker_from_url(
    url: str,
    history: HistoryPolicy | None = None,
    prefix: str = "push",
    idempotency_window: float = 300.0,
    idempotency_max_keys: int = 100_000,
    idempotency_max_bytes: int = 16 * 1024 * 1024,
    sweep_interval: float = 1.0,
    redis_max_connections: int = 32,
    redis_pool_timeout: float = 10.0,
    events: EngineEvents | None = None,
) -> Broker:
    """`memory://` (one process), `redis://host:port/db` (replicas sharing topics) or
    `redis+cluster://host:port,...[?partitions=N]` (the same over a Redis Cluster's shards)."""
    scheme = check_broker_url(url)
    if scheme == "memory":
        return MemoryBroker(history, IdempotencyCache(idempotency_window, idempotency_max_keys, idempotency_max_bytes),
                            sweep_interval=sweep_interval)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBroker

        return RedisBroker(url, history, prefix=prefix, idempotency_window=idempotency_window,
                           max_connections=redis_max_connections, pool_timeout=redis_pool_timeout, events=events)
    from .redis_cluster import RedisClusterBroker

    return RedisClusterBroker(url, history, prefix=prefix, idempotency_window=idempotency_window,
                              max_connections=redis_max_connections, pool_timeout=redis_pool_timeout, events=events)


def check_broker_url(url: str) -> str:
    """The URL's scheme, or ValueError saying what is wrong with it (settings check it at start)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "redis+cluster":
        from .redis_cluster import parse_cluster_url

        parse_cluster_url(url)
    elif scheme not in ("memory", "redis", "rediss", "unix"):
        raise ValueError(f"unsupported broker URL {url!r}: expected memory://, redis://host:port/db or "
                         "redis+cluster://host:port[,host:port...]")
    return scheme


__all__ = ["Broker", "EngineEvents", "MemoryBroker", "PublicationHandler", "broker_from_url", "check_broker_url"]
