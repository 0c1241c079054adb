"""The edge's client of TaskService: browsers reach tasks only through here (HTTP API and handlers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import orjson
from task.v1 import task_service_pb2 as pb
from task.v1 import task_service_pb2_grpc as pb_grpc

from pushclient.task_json import task_json

from .core.auth import Principal
from .core.codes import ErrorCode

MAX_KIND_CHARS = 64
# What the edge forwards at most as a task's params (the task service's own bound is tighter:
# TASK_MAX_PARAMS_BYTES): past it, the answer is MESSAGE_TOO_LARGE / 413, not a gRPC size error.
MAX_PARAMS_BYTES = 65536


class TaskGatewayError(Exception):
    def __init__(self, code: ErrorCode, message: str, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


_FROM_GRPC = {
    grpc.StatusCode.NOT_FOUND: (ErrorCode.NOT_FOUND, 404),
    grpc.StatusCode.INVALID_ARGUMENT: (ErrorCode.INVALID_MESSAGE, 400),
    grpc.StatusCode.FAILED_PRECONDITION: (ErrorCode.INVALID_MESSAGE, 409),
    grpc.StatusCode.PERMISSION_DENIED: (ErrorCode.FORBIDDEN, 403),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (ErrorCode.TOO_MANY_TASKS, 429),
    grpc.StatusCode.UNAVAILABLE: (ErrorCode.UNAVAILABLE, 503),
    grpc.StatusCode.DEADLINE_EXCEEDED: (ErrorCode.UNAVAILABLE, 503),
}


class TaskGateway:
    def __init__(self, address: str, timeout: float = 5.0,
                 channel_factory: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel) -> None:
        self.address = address
        self._channel_factory = channel_factory
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.TaskServiceStub | None = None

    def open(self) -> None:
        """Make the channel; inside the running event loop, which gRPC binds it to."""
        self._channel = self._channel_factory(self.address)
        self._stub = pb_grpc.TaskServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def start(self, fields: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """Start a task for `principal` from a request's `{kind?, params?}` (a `task_start`'s data, a
        POST /api/tasks body). The task service validates the params; raises TaskGatewayError."""
        request = start_request(fields, principal)
        return task_json((await self._call("StartTask", request)).task)

    async def cancel(self, task_id: str, principal: Principal) -> dict[str, Any]:
        request = pb.CancelTaskRequest(task_id=task_id, caller=caller(principal))
        return task_json((await self._call("CancelTask", request)).task)

    async def get(self, task_id: str) -> dict[str, Any]:
        return task_json((await self._call("GetTask", pb.GetTaskRequest(task_id=task_id))).task)

    async def list(self) -> list[dict[str, Any]]:
        return [task_json(t) for t in (await self._call("ListTasks", pb.ListTasksRequest())).tasks]

    async def _call(self, method_name: str, request):  # type: ignore[no-untyped-def]
        assert self._stub is not None, "TaskGateway.open() first"
        try:
            return await getattr(self._stub, method_name)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            code, http_status = _FROM_GRPC.get(exc.code(), (ErrorCode.INTERNAL_ERROR, 502))
            raise TaskGatewayError(code, f"task service: {exc.details()}", http_status) from None


def caller(principal: Principal) -> pb.Caller:
    """Who asks the task service: the verified user (empty when anonymous) and whether they are an admin."""
    return pb.Caller(user=principal.user or "", admin=principal.admin)


def start_request(fields: dict[str, Any], principal: Principal) -> pb.StartTaskRequest:
    """The one place the edge reads a task start request; only what the task service cannot be sent
    is refused here (the params themselves are the task service's to judge)."""
    kind = fields.get("kind", "")  # none: the task service's default kind
    if not isinstance(kind, str) or not len(kind) <= MAX_KIND_CHARS:
        raise TaskGatewayError(ErrorCode.INVALID_MESSAGE,
                               f"`kind` must be a task kind name of at most {MAX_KIND_CHARS} characters", 400)
    try:
        params = orjson.dumps(fields.get("params", {}))
    except TypeError as exc:
        # orjson.JSONEncodeError: what a decoder may give and orjson cannot encode (nesting deeper than
        # 254, which orjson's decoder takes up to 1,024; integers beyond 64 bits, which `json` takes).
        raise TaskGatewayError(ErrorCode.INVALID_MESSAGE, f"`params` cannot be sent on as JSON: {exc}", 400) from None
    if len(params) > MAX_PARAMS_BYTES:
        raise TaskGatewayError(ErrorCode.MESSAGE_TOO_LARGE, f"`params` over {MAX_PARAMS_BYTES} bytes of JSON", 413)
    return pb.StartTaskRequest(kind=kind, params=params, caller=caller(principal))
