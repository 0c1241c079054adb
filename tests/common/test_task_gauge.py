"""The asyncio task count each service's /metrics shows (bench.soak watches it for leaks)."""

from __future__ import annotations

import asyncio
import threading

from common.task_gauge import TaskCountCollector, live_tasks


async def test_live_tasks_counts_unfinished_tasks_from_any_thread():
    before = live_tasks()
    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(5)]
    await asyncio.sleep(0)
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.append(live_tasks()))  # as a metrics scrape does
    reader.start()
    reader.join()
    assert seen == [before + 5]
    release.set()
    await asyncio.gather(*waiting)
    assert live_tasks() == before
    (family,) = TaskCountCollector("x_asyncio_tasks").collect()
    assert (family.name, family.samples[0].value) == ("x_asyncio_tasks", before)
