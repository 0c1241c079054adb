"""Tasks as browsers reach them, through the edge (real processes): the answer to params the edge cannot
send on (HTTP and WebSocket), and the dashboard's rows following the task list (in real Chromium)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from playwright.async_api import Page, expect

from pushclient import PushClient
from tests.browser.conftest import ConsoleWatch, browser, page  # noqa: F401 (fixtures)
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.tokens import token
from tests.support.wsclient import WsClient
from ws_edge.core.auth import ANONYMOUS
from ws_edge.core.codes import ErrorCode
from ws_edge.task_gateway import TaskGatewayError, start_request


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory: pytest.TempPathFactory):
    # The task service remembers one finished task: the one before is forgotten when the next finishes.
    system = start_system(tmp_path_factory, "forgetful", task_env={"TASK_KEEP_FINISHED": "1"})
    yield system
    system.stop()


async def post_task(system: System, body: dict) -> tuple[int, Any]:
    """POST /api/tasks as alice: the status and the JSON answer (its text when it is not JSON: a 500's)."""
    def post() -> tuple[int, Any]:
        request = urllib.request.Request(system.http_url + "/api/tasks", json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json",
                                                  "authorization": f"Bearer {token('alice')}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    return await asyncio.to_thread(post)


async def test_params_the_edge_cannot_encode_are_a_bad_message_not_a_server_error(forgetful: System):
    # The edge reads a start's params (HTTP body, `task_start` frame) and encodes them with orjson, which
    # refuses what its decoders may give: nesting deeper than 254 (orjson reads 1,024), and integers
    # beyond 64 bits (Python's `json` reads any). Both were a 500 / INTERNAL_ERROR.
    deep: list = []
    for _ in range(300):
        deep = [deep]
    detail = "`params` cannot be sent on as JSON: Recursion limit reached"
    status, body = await post_task(forgetful, {"params": {"symbols": ["A"], "deep": deep}})
    assert (status, body) == (400, {"detail": detail})
    client = await WsClient.connect(forgetful.ws_url, "/ws", token=token("alice"))
    try:  # sent as text: the test client's own orjson would refuse it
        await client.send_raw(json.dumps({"type": "task_start", "id": "deep", "data": {"params": {"deep": deep}}}))
        refused = await client.recv()
    finally:
        await client.close()
    assert (refused["type"], refused["id"], refused["error"]) == ("error", "deep",
                                                                  {"code": "INVALID_MESSAGE", "message": detail})
    with pytest.raises(TaskGatewayError) as too_big:  # the one reading of a start, whatever parsed it
        start_request({"params": {"n": 2**64}}, ANONYMOUS)
    assert (too_big.value.code, too_big.value.http_status, too_big.value.message) == (
        ErrorCode.INVALID_MESSAGE, 400, "`params` cannot be sent on as JSON: Integer exceeds 64-bit range")


def task_row(on: Page, task_id: str):  # type: ignore[no-untyped-def]
    return on.locator(f'#tasks tbody tr[data-task-id="{task_id}"]')


@pytest.mark.browser
async def test_the_dashboard_drops_the_rows_of_tasks_a_whole_list_leaves_out(forgetful: System, page: Page):  # noqa: F811
    console = ConsoleWatch(page)
    await page.goto(forgetful.http_url + "/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    ids = []
    for symbol in ("A", "B"):
        status, body = await post_task(forgetful, {"params": {"symbols": [symbol], "interval": 0}})
        assert status == 201, body
        ids.append(body["task"]["task_id"])
        await expect(task_row(page, ids[-1]).locator(".status")).to_have_text("completed")
    # The second finished, so the task service forgot the first: the list says so, whole (omitted 0).
    await expect(task_row(page, ids[0])).to_have_count(0)
    await expect(page.locator("#tasks tbody tr")).to_have_count(1)
    await expect(page.locator("#no-tasks")).to_be_hidden()

    # A list cut to its size bound (omitted > 0) leaves out tasks that are still there: their rows stay.
    cut = {"tasks": [{"task_id": "listed-only", "kind": "data_collection", "status": "running",
                      "progress": {"percentage": 0.0, "current": "", "total": 1, "completed": 0},
                      "error": None, "owner": None, "created_at": 1, "updated_at": 1}], "omitted": 5}
    async with PushClient(forgetful.push_address) as push:
        await push.publish("task:list", "task_list", cut, retain=True)
    await expect(task_row(page, "listed-only")).to_have_count(1)
    await expect(page.locator("#tasks tbody tr")).to_have_count(2)
    await expect(task_row(page, ids[1]).locator(".status")).to_have_text("completed")
    assert console.errors == []
