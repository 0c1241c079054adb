"""When Redis cannot answer now: the errors that mean it, and how every Redis operation reports them
(the single-Redis engine, the cluster engine and the presence store alike)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.exceptions import (
    AskError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import BrokerUnavailable, EngineEvents

# Redis is away, or refuses writes for now (loading, a read-only replica after a failover, maxmemory):
# callers get UNAVAILABLE and retry. (Connection errors include the pool's "No connection available".)
# On a Redis Cluster also: a slot moved or moving (MOVED, ASK, TRYAGAIN), the cluster down or a slot not
# covered while a shard fails over (CLUSTERDOWN; the client's own "no node for this slot").
UNAVAILABLE_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError, OSError, AskError,
                      TryAgainError, ClusterError, RedisClusterException)


@contextlib.contextmanager
def unavailable_as(operation: str, events: EngineEvents) -> Iterator[None]:
    """Redis away (or refusing writes for now) becomes BrokerUnavailable, told by operation."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        events.failed(operation)
        raise BrokerUnavailable(f"redis: {exc}") from None
