"""The retained `task:list` is the running task service's, whatever restarted: published when the
service's stream to the push service first connects (replacing a previous process's) and each time it
connects again (a push service with the memory broker comes back without it)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import orjson

from pushclient import PushClient
from task_service.config import TaskSettings
from task_service.core.tasks import Status
from task_service.server import RunningTaskServer, start_task_server
from tests.support.timing import timeout
from tests.task_service.conftest import push_service, until


async def task_service(push_port: int) -> RunningTaskServer:
    return await start_task_server(TaskSettings(port=0, push_address=f"127.0.0.1:{push_port}", metrics_port=0))


async def list_seen_by_a_new_subscriber(push_port: int) -> dict:
    """The first task_list a new subscriber of `task:list` gets: the retained one, else the next published."""
    async with PushClient(f"127.0.0.1:{push_port}") as client, aclosing(client.tail(["task:list"])) as frames:
        return orjson.loads(await asyncio.wait_for(anext(frames), timeout(10)))["data"]  # type: ignore[no-any-return]


async def test_a_starting_task_service_replaces_the_list_a_previous_process_left():
    async with push_service() as push:
        # What a task service killed mid-task leaves: its tasks listed as running, for ever.
        stale = {"tasks": [{"task_id": "gone", "kind": "data_collection", "status": "running",
                            "progress": {"percentage": 0.0, "current": "", "total": 1, "completed": 0},
                            "error": None, "owner": None, "created_at": 1, "updated_at": 1}], "omitted": 0}
        async with PushClient(f"127.0.0.1:{push.port}") as client:
            await client.publish("task:list", "task_list", stale, retain=True)
        tasks = await task_service(push.port)
        try:
            # What it published when its stream connected (at start) is answered.
            await until(lambda: tasks.publisher.connected, "the task service's stream connected")
            await asyncio.wait_for(tasks.publisher.flush(), timeout(10))
            assert await list_seen_by_a_new_subscriber(push.port) == {"tasks": [], "omitted": 0}
        finally:
            await tasks.stop(0)


async def test_the_list_is_published_again_when_the_push_service_comes_back_without_it():
    async with push_service() as first:
        port = first.port
        tasks = await task_service(port)
        record = tasks.runner.start("data_collection", {"symbols": ["A"], "interval": 60})  # runs a minute
        await until(lambda: record.status is Status.RUNNING, "the task runs")
        await asyncio.wait_for(tasks.publisher.flush(), timeout(10))
    stopped = False
    try:
        # The push service restarted with the memory broker: no retained list, and no status changes
        # to publish one. The task service's stream connects again, and publishes it then.
        async with push_service(port=port):
            listed = await list_seen_by_a_new_subscriber(port)
            stopped = True  # while the push service is there to answer what it publishes on the way out
            await tasks.stop(0)
        assert [(t["task_id"], t["status"]) for t in listed["tasks"]] == [(record.task_id, "running")]
        assert listed["omitted"] == 0
    finally:
        if not stopped:
            await tasks.stop(0)
