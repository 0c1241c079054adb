"""What callers can make the task service hold is bounded, and the retained task list stays
publishable whatever the tasks are (security issue 16.7)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.conftest import start_system
from tests.support.asyncapi import schema_errors
from tests.support.processes import System, http_json
from tests.support.tokens import token
from tests.support.wsclient import WsClient, unpack

HUGE = {"symbols": [f"{i:032}" for i in range(1000)], "interval": 30}  # 1,000 symbols x 32 characters


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    # Params up to 64 KiB here, so that a few tasks' params alone are over the push service's 64 KiB.
    system = start_system(tmp_path_factory, "limited", task_env={
        "TASK_MAX_PARAMS_BYTES": "65536", "TASK_MAX_ACTIVE_TASKS": "5", "TASK_MAX_ACTIVE_TASKS_PER_USER": "3"})
    yield system
    system.stop()


async def connect(system: System, user: str, **params: str) -> WsClient:
    return await WsClient.connect(system.ws_url, "/ws", token=token(user), **params)


async def start(client: WsClient, request_id: str, params: dict) -> dict:
    return await client.request({"type": "task_start", "id": request_id, "data": {"params": params}})


async def test_large_tasks_still_reach_every_dashboard_in_the_task_list(limited: System):
    watcher = await connect(limited, "watcher", topics="task:list")
    alice = await connect(limited, "alice")
    try:
        assert len(orjson.dumps(HUGE)) * 3 > 65536
        ids = []
        for n in range(3):
            ack = await start(alice, f"big{n}", HUGE)
            assert ack["type"] == "ack", ack
            ids.append(ack["data"]["task"]["task_id"])
        # Each status change publishes the list; the one after the third task runs lists all three.
        for _ in range(100):
            lists = [m for m in unpack([await watcher.recv(10)]) if m["type"] == "task_list"]
            if lists and {t["task_id"]: t["status"] for t in lists[-1]["data"]["tasks"]
                          if t["task_id"] in ids} == dict.fromkeys(ids, "running"):
                break
        else:
            raise AssertionError("no task_list with the three tasks running")
        data = lists[-1]["data"]
        assert schema_errors(data, "TaskList") == []
        assert data["omitted"] == 0 and [t["task_id"] for t in data["tasks"]] == ids
        assert all(t["owner"] == "alice" and "params" not in t for t in data["tasks"])
        late = await connect(limited, "late", topics="task:list")
        assert (await late.recv())["data"] == data  # the retained list is this one, not a stale one
        await late.close()
        for n, task_id in enumerate(ids):
            ack = await alice.request({"type": "task_cancel", "id": f"c{n}", "data": {"task_id": task_id}})
            assert ack["data"]["task"]["status"] == "cancelled"
    finally:
        await watcher.close()
        await alice.close()


def post(url: str, user: str, body: dict) -> tuple[int, dict]:
    return http_json("POST", url, body, bearer=token(user))


async def test_active_tasks_are_limited_per_user_and_in_all(limited: System):
    bob, carol, dan = [await connect(limited, u) for u in ("bob", "carol", "dan")]
    long = {"symbols": ["A"], "interval": 30}
    try:
        bobs = [(await start(bob, f"b{n}", long))["data"]["task"]["task_id"] for n in range(3)]
        refused = await start(bob, "b3", long)
        assert refused["error"] == {"code": "TOO_MANY_TASKS", "message": (
            "task service: user 'bob' already has 3 tasks pending or running, the most allowed; "
            "retry when one has finished")}
        status, body = await asyncio.to_thread(post, limited.http_url + "/api/tasks", "bob", {"params": long})
        assert (status, body["detail"]) == (429, refused["error"]["message"])

        assert (await start(carol, "c0", long))["type"] == "ack"
        assert (await start(carol, "c1", long))["type"] == "ack"
        refused = await start(dan, "d0", long)  # 5 in all: dan has none, but the service is full
        assert refused["error"] == {"code": "TOO_MANY_TASKS", "message": (
            "task service: 5 tasks are pending or running, the most there may be; retry when one has finished")}

        await bob.request({"type": "task_cancel", "id": "x", "data": {"task_id": bobs[0]}})
        assert (await start(dan, "d1", long))["type"] == "ack"  # a finished task frees its place
    finally:
        for client in (bob, carol, dan):
            await client.close()
