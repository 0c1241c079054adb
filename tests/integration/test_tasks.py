"""A demo task's progress, status and the task list, end to end; cancel mid-run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TEST_USER
from tests.support.processes import System, http_json
from tests.support.tokens import token
from tests.support.wsclient import WsClient

pytestmark = pytest.mark.portable


def listed_status(message: dict, task_id: str) -> str | None:
    if message["type"] != "task_list":
        return None
    return {t["task_id"]: t["status"] for t in message["data"]["tasks"]}.get(task_id)


async def collect_until_status(client: WsClient, task_id: str, final: str, limit: int = 500) -> list[dict]:
    """Messages up to the task_list that shows `task_id` with status `final` (it follows the status)."""
    seen: list[dict] = []
    for _ in range(limit):
        frame = await client.recv(10)
        batch = frame["messages"] if frame["type"] == "batch" else [frame]
        seen.extend(batch)
        if any(listed_status(m, task_id) == final for m in batch):
            return seen
    raise AssertionError(f"no {final} status for {task_id}")


async def test_demo_task_reports_running_progress_to_100_completed_and_list(system: System, ws):
    client = await ws("/ws/task")
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
    ack = await client.request(
        {"type": "task_start", "id": "start_1", "data": {"params": {"symbols": symbols, "interval": 0.05}}}
    )
    assert ack["type"] == "ack" and ack["id"] == "start_1"
    task = ack["data"]["task"]
    assert task["status"] == "pending" and task["kind"] == "data_collection"
    task_id = task["task_id"]

    seen = await collect_until_status(client, task_id, "completed")
    mine = [m for m in seen if m.get("data", {}).get("task_id") == task_id]
    statuses = [m["data"]["status"] for m in mine if m["type"] == "task_status"]
    assert statuses == ["pending", "running", "completed"]
    progress = [m["data"]["progress"] for m in mine if m["type"] == "task_progress"]
    assert [p["completed"] for p in progress] == [0, 1, 2, 3, 4, 5]
    assert [p["percentage"] for p in progress] == [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    assert [p["current"] for p in progress] == ["", *symbols]
    assert all(p["total"] == 5 for p in progress)
    for message in mine:
        assert message["topic"] == {"task_progress": "task:progress", "task_status": "task:status"}[message["type"]]

    lists = [m for m in seen if m["type"] == "task_list"]
    # On a system that runs other tasks too (a deployment, the compose stack: earlier tests' tasks),
    # lists come before this task's first (the retained one, others' changes) and between its changes
    # (others' changes, showing this task's status unchanged). This task's statuses, in the order
    # the lists showed them: pending, running, completed; once listed, it is in every list.
    while lists and listed_status(lists[0], task_id) is None:
        lists = lists[1:]
    shown = [listed_status(m, task_id) for m in lists]
    assert [s for i, s in enumerate(shown) if i == 0 or s != shown[i - 1]] == ["pending", "running", "completed"]
    assert all(m["topic"] == "task:list" for m in lists)
    final = {t["task_id"]: t for t in lists[-1]["data"]["tasks"]}[task_id]
    assert final["progress"]["percentage"] == 100.0

    # A client subscribing to task:list gets the current list at once, not only the next change.
    late = await ws("/ws", topics="task:list")
    current = await late.recv()
    assert current["type"] == "task_list"
    assert {t["task_id"]: t["status"] for t in current["data"]["tasks"]}[task_id] == "completed"
    subscriber = await ws()
    ack = await subscriber.request({"type": "subscribe", "id": "s", "data": {"topics": ["task:list"]}})
    assert ack["type"] == "ack"
    assert (await subscriber.recv())["data"] == current["data"]


async def test_cancelling_mid_run_yields_cancelled_and_no_more_progress(system: System, ws):
    client = await ws("/ws/task")
    ack = await client.request(
        {"type": "task_start", "id": "s2", "data": {"params": {"symbols": [f"S{i}" for i in range(40)],
                                                              "interval": 0.2}}}
    )
    task_id = ack["data"]["task"]["task_id"]
    for _ in range(100):
        frame = await client.recv(10)
        batch = frame["messages"] if frame["type"] == "batch" else [frame]
        if any(m["type"] == "task_progress" and m["data"]["progress"]["completed"] >= 1 for m in batch):
            break
    cancel = await client.send({"type": "task_cancel", "id": "c1", "data": {"task_id": task_id}})
    assert cancel is None
    seen = await collect_until_status(client, task_id, "cancelled")
    # The ack answers the task service's reply; the status and the list come through the push
    # service: two paths, so the ack may come after the list (seen once, in the compose stack).
    while not any(m["type"] == "ack" and m["id"] == "c1" for m in seen):
        frame = await client.recv(10)
        seen.extend(frame["messages"] if frame["type"] == "batch" else [frame])
    acks = [m for m in seen if m["type"] == "ack" and m["id"] == "c1"]
    assert len(acks) == 1 and acks[0]["data"]["task"]["status"] == "cancelled"
    cancelled_at = next(i for i, m in enumerate(seen) if m["type"] == "task_status" and m["data"]["status"] == "cancelled")
    assert not [m for m in seen[cancelled_at:] if m["type"] == "task_progress"]
    await client.expect_silence(1.0)  # no progress after cancellation
    # Cancelling again is refused with a clear error, on the same connection.
    again = await client.request({"type": "task_cancel", "id": "c2", "data": {"task_id": task_id}})
    assert again["type"] == "error" and again["id"] == "c2"
    assert again["error"]["code"] == "INVALID_MESSAGE" and "cancelled" in again["error"]["message"]
    missing = await client.request({"type": "task_cancel", "id": "c3", "data": {"task_id": "nope"}})
    assert missing["error"]["code"] == "NOT_FOUND"


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    # With a user's token: a deployment lets only authenticated users start and cancel tasks.
    return http_json(method, url, body, bearer=token(TEST_USER))


async def test_http_task_api_on_the_edge(system: System):
    status, body = http("POST", system.http_url + "/api/tasks", {"params": {"symbols": ["A"], "interval": 0}})
    assert status == 201
    task_id = body["task"]["task_id"]
    status, body = http("GET", system.http_url + f"/api/tasks/{task_id}")
    assert status == 200 and body["task"]["task_id"] == task_id
    status, body = http("GET", system.http_url + "/api/tasks")
    assert status == 200 and task_id in [t["task_id"] for t in body["tasks"]]
    status, body = http("POST", system.http_url + "/api/tasks", {"kind": "no_such_kind"})
    assert status == 400 and "unknown task kind" in body["detail"]
    status, body = http("POST", system.http_url + "/api/tasks", {"params": {"symbols": "BTC"}})
    assert status == 400 and "symbols" in body["detail"]
    status, body = http("POST", system.http_url + "/api/tasks/nope/cancel")
    assert status == 404


async def test_oversized_task_params_are_refused_by_the_task_service(system: System, ws):
    client = await ws("/ws/task")
    params = {"symbols": [f"{i:032}" for i in range(1000)], "interval": 0}  # 1,000 symbols x 32 characters
    refused = await client.request({"type": "task_start", "id": "huge", "data": {"params": params}})
    assert refused["error"] == {"code": "INVALID_MESSAGE", "message": (
        f"task service: params are {len(json.dumps(params, separators=(',', ':')))} bytes of JSON; at most 16384")}
    status, body = http("POST", system.http_url + "/api/tasks", {"params": params})
    assert (status, body["detail"]) == (400, refused["error"]["message"])
    # The edge reads a start request in one place, for both: a kind that is not a name is refused there.
    refused = await client.request({"type": "task_start", "id": "k", "data": {"kind": 5}})
    assert refused["error"] == {"code": "INVALID_MESSAGE",
                                "message": "`kind` must be a task kind name of at most 64 characters"}
    status, body = http("POST", system.http_url + "/api/tasks", {"kind": 5})
    assert (status, body["detail"]) == (400, refused["error"]["message"])
    status, body = http("POST", system.http_url + "/api/tasks", {"params": [1]})
    assert (status, body["detail"]) == (400, "task service: params must be a JSON object")
