"""A task belongs to the user who started it: only they or an admin may cancel it, over WebSocket,
HTTP and gRPC; an anonymous browser's task stays anyone's to cancel."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from task.v1 import task_service_pb2 as task_pb
from task.v1 import task_service_pb2_grpc as task_grpc

from tests.support.processes import System, http_json
from tests.support.tokens import token

LONG = {"params": {"symbols": ["A", "B", "C"], "interval": 30}}  # stays running until cancelled
ADMIN_TOKEN = token("olga", roles=["ops", "admin"])


def refused_cancel(task_id: str, owner: str) -> str:
    return f"task service: task {task_id} belongs to user '{owner}'; only its owner or an admin may cancel it"


@pytest.mark.portable
async def test_over_websocket_only_the_owner_or_an_admin_cancels(system: System, ws):
    alice = await ws(token=token("alice"))
    bob = await ws(token=token("bob"))
    admin = await ws(token=ADMIN_TOKEN)
    started = await alice.request({"type": "task_start", "id": "a1", "data": LONG})
    assert started["type"] == "ack" and started["data"]["task"]["owner"] == "alice"
    task_id = started["data"]["task"]["task_id"]

    refused = await bob.request({"type": "task_cancel", "id": "b1", "data": {"task_id": task_id}})
    assert refused["type"] == "error" and refused["id"] == "b1"
    assert refused["error"] == {"code": "FORBIDDEN", "message": refused_cancel(task_id, "alice")}
    if system.anonymous_allowed:
        stranger = await ws()
        refused = await stranger.request({"type": "task_cancel", "id": "x1", "data": {"task_id": task_id}})
        assert refused["error"]["code"] == "FORBIDDEN"
    assert (await bob.request({"type": "ping", "id": "still"}))["type"] == "pong"

    cancelled = await admin.request({"type": "task_cancel", "id": "o1", "data": {"task_id": task_id}})
    assert cancelled["type"] == "ack" and cancelled["data"]["task"]["status"] == "cancelled"
    assert cancelled["data"]["task"]["owner"] == "alice"

    mine = await bob.request({"type": "task_start", "id": "b2", "data": LONG})
    own_id = mine["data"]["task"]["task_id"]
    cancelled = await bob.request({"type": "task_cancel", "id": "b3", "data": {"task_id": own_id}})
    assert cancelled["type"] == "ack" and cancelled["data"]["task"]["status"] == "cancelled"


async def test_an_anonymous_browsers_task_is_anyones_to_cancel(system: System, ws):
    """Not portable: a deployment refuses anonymous connections (the compose stack does)."""
    anonymous = await ws()
    started = await anonymous.request({"type": "task_start", "id": "n1", "data": LONG})
    assert started["data"]["task"]["owner"] is None
    carol = await ws(token=token("carol"))
    task_id = started["data"]["task"]["task_id"]
    cancelled = await carol.request({"type": "task_cancel", "id": "c1", "data": {"task_id": task_id}})
    assert cancelled["type"] == "ack" and cancelled["data"]["task"]["status"] == "cancelled"


def http(method: str, url: str, user_token: str, body: dict | None = None) -> tuple[int, dict]:
    return http_json(method, url, body, bearer=user_token)


@pytest.mark.portable
async def test_over_http_another_users_cancel_is_403(system: System):
    api = system.http_url + "/api/tasks"
    status, body = await asyncio.to_thread(http, "POST", api, token("dan"), LONG)
    assert status == 201 and body["task"]["owner"] == "dan"
    task_id = body["task"]["task_id"]
    status, body = await asyncio.to_thread(http, "POST", f"{api}/{task_id}/cancel", token("eve"))
    assert (status, body) == (403, {"detail": refused_cancel(task_id, "dan")})
    status, body = await asyncio.to_thread(http, "GET", f"{api}/{task_id}", token("eve"))
    assert status == 200 and body["task"]["status"] in ("pending", "running")
    status, body = await asyncio.to_thread(http, "POST", f"{api}/{task_id}/cancel", token("dan"))
    assert status == 200 and body["task"]["status"] == "cancelled"


@pytest.mark.portable
async def test_over_grpc_the_owner_travels_in_start_and_the_caller_in_cancel(system: System):
    metadata = (("authorization", f"Bearer {system.grpc_token}"),) if system.grpc_token else None
    params = json.dumps(LONG["params"]).encode()
    async with grpc.aio.insecure_channel(system.task_address) as channel:
        tasks = task_grpc.TaskServiceStub(channel)
        started = await tasks.StartTask(task_pb.StartTaskRequest(
            kind="data_collection", params=params, caller=task_pb.Caller(user="fay")), metadata=metadata)
        assert started.task.owner == "fay"
        task_id = started.task.task_id
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks.CancelTask(task_pb.CancelTaskRequest(
                task_id=task_id, caller=task_pb.Caller(user="gus")), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == refused_cancel(task_id, "fay").removeprefix("task service: ")
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # an anonymous browser's request
            await tasks.CancelTask(task_pb.CancelTaskRequest(task_id=task_id, caller=task_pb.Caller()),
                                   metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A request without a caller is an internal service's: it may cancel any task (as before).
        cancelled = await tasks.CancelTask(task_pb.CancelTaskRequest(task_id=task_id), metadata=metadata)
        assert cancelled.task.status == task_pb.TASK_STATUS_CANCELLED

        # An internal service's own task (no caller): other services and admins only, not a user.
        own = await tasks.StartTask(task_pb.StartTaskRequest(kind="data_collection", params=params),
                                    metadata=metadata)
        assert own.task.owner == ""
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks.CancelTask(task_pb.CancelTaskRequest(
                task_id=own.task.task_id, caller=task_pb.Caller(user="gus")), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        cancelled = await tasks.CancelTask(task_pb.CancelTaskRequest(
            task_id=own.task.task_id, caller=task_pb.Caller(user="gus", admin=True)), metadata=metadata)
        assert cancelled.task.status == task_pb.TASK_STATUS_CANCELLED
