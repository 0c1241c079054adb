"""The review's case: tasks at `interval` 0 flood the publisher with progress while the push service is
away. Every status must still be published, with each task's latest progress and the latest list;
only superseded progress (and lists) may go."""

from __future__ import annotations

import asyncio

import pytest

from pushclient import PushClient
from task_service.config import TaskSettings
from task_service.server import start_task_server
from tests.support.processes import free_port
from tests.support.timing import timeout
from tests.task_service.conftest import history, push_service, until

KEEP_ALL = '[{"pattern": "*", "size": 100000, "ttl": 600}]'  # history keeps whatever was published


@pytest.mark.parametrize(("buffer", "big_tasks"), [(10_000, 12), (100, 5)], ids=["default-buffer", "full-buffer"])
async def test_a_flood_of_progress_while_the_push_service_is_away_loses_no_status(buffer: int, big_tasks: int):
    # default-buffer: 12,000 steps, more than the 10,000 the buffer holds; full-buffer: a buffer of 100.
    port = free_port()  # where the push service will be: nothing listens yet
    tasks = await start_task_server(TaskSettings(port=0, push_address=f"127.0.0.1:{port}", metrics_port=0,
                                                 publish_buffer=buffer))
    try:
        symbols = [f"S{i:04}" for i in range(1000)]
        started = [tasks.runner.start("data_collection", {"symbols": symbols, "interval": 0}) for _ in range(big_tasks)]
        await until(lambda: all(r.status.finished for r in started), "the big tasks finished")
        small = tasks.runner.start("data_collection", {"symbols": ["A"], "interval": 0})
        started.append(small)
        await until(lambda: small.status.finished, "the small task finished")
        if buffer == 10_000:
            # Never full: past the mark (1,000 held) a task's newer step replaced its unsent one, so the
            # buffer holds about the mark, each task's statuses and latest step; nothing was dropped.
            assert tasks.publisher.dropped == 0
            assert tasks.publisher.buffered < 1100

        async with push_service(port=port, history_rules=KEEP_ALL), PushClient(f"127.0.0.1:{port}") as push:
            await asyncio.wait_for(tasks.publisher.flush(), timeout(30))
            statuses = await history(push, "task:status")
            progress = await history(push, "task:progress")
            lists = await history(push, "task:list")
    finally:
        await tasks.stop(0)

    for record in started:
        assert [m["data"]["status"] for m in statuses if m["data"]["task_id"] == record.task_id] == [
            "pending", "running", "completed"], record.task_id
        steps = [m["data"]["progress"] for m in progress if m["data"]["task_id"] == record.task_id]
        assert steps[-1] == {"percentage": 100.0, "current": record.progress.current,
                             "total": record.progress.total, "completed": record.progress.total}
    assert {t["task_id"]: t["status"] for t in lists[-1]["data"]["tasks"]} == {
        r.task_id: "completed" for r in started}
