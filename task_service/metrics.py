"""The task service's Prometheus metrics (besides its publisher's, `push_publisher_*`), served over
HTTP on TASK_METRICS_PORT (/metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from weakref import WeakSet

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.task_gauge import TaskCountCollector

STARTED = Counter("task_started", "Tasks started, by kind", ["kind"])
FINISHED = Counter("task_finished", "Tasks finished, by final status", ["status"])


class RunnerCollector(Collector):
    """Gauges read from the process's task runners at scrape time."""

    def __init__(self) -> None:
        self.runners: WeakSet = WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("task_running", "Tasks pending or running now",
                                value=sum(r.active for r in list(self.runners)))


RUNNERS = RunnerCollector()
REGISTRY.register(RUNNERS)
REGISTRY.register(TaskCountCollector("task_asyncio_tasks"))  # a leak of tasks shows as growth (bench.soak)
