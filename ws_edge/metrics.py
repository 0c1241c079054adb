"""The edge's Prometheus metrics, served at GET /metrics on a port of their own (EDGE_METRICS_PORT).

The fan-out path moves counters once per batch of the push stream (never once per socket); gauges and
the per-connection tallies (queues, coalescing) are read from the running edges only when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from weakref import WeakSet

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.task_gauge import TaskCountCollector

RECEIVED = Counter("ws_edge_messages_received", "Messages received from the push service")
DELIVERED = Counter("ws_edge_messages_delivered", "Messages sent or queued to clients (one per receiving connection)")
PUSH_BATCH = Histogram("ws_edge_push_batch_messages", "Messages per batch received from the push service",
                       buckets=(1, 2, 3, 5, 10, 20, 50, 100))
LATENCY = Histogram(
    "ws_edge_delivery_latency_seconds",
    "From the push service accepting a message to the edge writing it to its subscribers' sockets",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
FRAME_WRITER = Gauge("ws_edge_frame_writer", "1 for how frames reach sockets: uvicorn-fast-path, or asgi (slower)",
                     ["writer"])
CLIENT_FRAMES = Counter("ws_edge_client_frames", "Frames received from clients")
ERROR_FRAMES = Counter("ws_edge_error_frames", "Error frames sent to clients, by code", ["code"])
OPENED = Counter("ws_edge_connections_opened", "WebSocket connections accepted and authenticated")
REFUSED = Counter("ws_edge_connections_refused", "Connections refused, by reason", ["reason"])
DROPPED = Counter("ws_edge_messages_dropped", "Queued frames dropped when their connection was closed")
HOOK_CALLS = Counter("ws_edge_hook_calls", "Backend hook calls, by hook and outcome (allow, refuse, unavailable)",
                     ["hook", "outcome"])
HOOK_SECONDS = Histogram("ws_edge_hook_seconds", "Backend hook calls' duration (made calls only), by hook", ["hook"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))


class EdgeCollector(Collector):
    """Read at scrape time from the process's running edges (one in a service). Scrapes run on
    prometheus_client's server thread while the event loop changes these tables: each is copied with
    one `list(...)` (one C call under the GIL, which no other thread interleaves with) before it is
    walked."""

    def __init__(self) -> None:
        self.edges: WeakSet = WeakSet()

    def collect(self) -> Iterator[Metric]:
        edges = list(self.edges)
        connections = [d.connection for edge in edges for d in list(edge.connections.values())]
        topics = [(e, t) for e in edges for t in list(e.router.topics.keys())]
        yield GaugeMetricFamily("ws_edge_connections", "Open WebSocket connections", value=len(connections))
        yield GaugeMetricFamily("ws_edge_topics", "Topics with at least one subscriber here", value=len(topics))
        yield GaugeMetricFamily("ws_edge_subscriptions", "Topic subscriptions of all connections",
                                value=sum(len(e.router.topics.subscribers(t)) for e, t in topics))
        yield GaugeMetricFamily("ws_edge_send_queue_messages", "Frames queued for slow sockets, all connections",
                                value=sum(c.queued for c in connections))
        yield GaugeMetricFamily("ws_edge_push_connected", "1 while the push stream is up with the whole interest",
                                value=sum(1 for e in edges if e.push.connected.is_set()))
        yield CounterMetricFamily("ws_edge_messages_coalesced", "Queued messages replaced by a newer one (conflation)",
                                  value=sum(e.stats["coalesced"] for e in edges) + sum(c.coalesced for c in connections))
        yield CounterMetricFamily("ws_edge_slow_consumer_disconnects", "Connections closed 4008 (slow consumer)",
                                  value=sum(e.stats["slow_consumers"] for e in edges))
        yield CounterMetricFamily("ws_edge_push_reconnects", "Times the push stream was opened again",
                                  value=sum(e.push.reconnects for e in edges))
        yield CounterMetricFamily("ws_edge_push_silences",
                                  "Push streams given up because the replica said nothing (not even a heartbeat)",
                                  value=sum(e.push.silences for e in edges))


EDGES = EdgeCollector()
REGISTRY.register(EDGES)
REGISTRY.register(TaskCountCollector("ws_edge_asyncio_tasks"))  # a leak of tasks shows as growth (bench.soak)
