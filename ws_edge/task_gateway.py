"""The edge's client of TaskService: browsers reach tasks only through here (HTTP API and handlers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import orjson
from task.v1 import task_service_pb2 as pb
from task.v1 import task_service_pb2_grpc as pb_grpc

from common.task_json import task_json

from .core.codes import ErrorCode


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

    async def start(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        request = pb.StartTaskRequest(kind=kind, params=orjson.dumps(params))
        return task_json((await self._call("StartTask", request)).task)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return task_json((await self._call("CancelTask", pb.CancelTaskRequest(task_id=task_id))).task)

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
