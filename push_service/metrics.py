"""The push service's Prometheus metrics, served over HTTP on PUSH_METRICS_PORT (/metrics).

Counters move on the publish and stream paths (once per message or batch, never per subscriber);
gauges of the hub's state are read only when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from weakref import WeakSet

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.task_gauge import TaskCountCollector

from .broker.base import EngineEvents

PUBLISHED = Counter("push_messages_published", "Messages accepted from publishers", ["rpc"])
REJECTED = Counter("push_messages_rejected", "Messages refused to publishers, by gRPC status", ["rpc", "code"])
SENT = Counter("push_messages_sent", "Messages sent to edges (one per edge stream that wanted them)")
BATCH_SIZE = Histogram("push_edge_batch_messages", "Messages per batch sent on an edge stream",
                       buckets=(1, 2, 3, 5, 10, 20, 50, 100))
EDGE_STREAMS_OPENED = Counter("push_edge_streams_opened", "Edge streams opened (an edge's reconnect opens one)")
EDGES_TOO_SLOW = Counter("push_edge_streams_too_slow", "Edge streams ended because the edge stopped reading")
REDIS_ERRORS = Counter("push_redis_errors", "Redis operations that failed", ["operation"])
REDIS_RECONNECTS = Counter("push_redis_subscriber_reconnects", "Times the Redis subscriber came back")


class RedisEvents(EngineEvents):
    """The Redis engine's failures and reconnects, counted (given to it by server.py)."""

    def failed(self, operation: str) -> None:
        REDIS_ERRORS.labels(operation).inc()

    def reconnected(self) -> None:
        REDIS_RECONNECTS.inc()


class HubCollector(Collector):
    """Gauges read from the process's running hubs (one in a service; tests may run several) at
    scrape time."""

    def __init__(self) -> None:
        self.hubs: WeakSet = WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = [hub.stats() for hub in list(self.hubs)]
        for name, help_text in (
            ("push_edge_streams", "Edge streams open now"),
            ("push_channels", "Channels (topics and personal client ids) some edge wants"),
            ("push_topics", "Topics some edge wants"),
            ("push_edge_queue_batches", "Batches waiting to be written to edge streams, all streams"),
        ):
            key = name.removeprefix("push_")
            yield GaugeMetricFamily(name, help_text, value=sum(s[key] for s in stats))


HUBS = HubCollector()
REGISTRY.register(HUBS)
REGISTRY.register(TaskCountCollector("push_asyncio_tasks"))  # a leak of tasks shows as growth (bench.soak)
