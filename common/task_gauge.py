"""The asyncio tasks a process has alive, counted from any thread (a metrics scrape runs on
prometheus_client's own thread, where there is no event loop): a task that is never collected shows
as a count that grows (`bench.soak` watches it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


def live_tasks() -> int:
    """Unfinished asyncio tasks of every event loop in this process (a service runs one)."""
    tasks = asyncio.tasks
    # Python keeps every task of every loop in module-level sets: 3.11 `_all_tasks`, 3.12+
    # `_scheduled_tasks` and `_eager_tasks`. Each is copied in one C call under the GIL.
    found = [*list(getattr(tasks, "_all_tasks", ())), *list(getattr(tasks, "_scheduled_tasks", ())),
             *list(getattr(tasks, "_eager_tasks", ()))]
    return sum(1 for task in set(found) if not task.done())


class TaskCountCollector(Collector):
    """`<name>`: a gauge read at scrape time."""

    def __init__(self, name: str) -> None:
        self.name = name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, "asyncio tasks alive in this process (read at scrape time)",
                                value=live_tasks())
