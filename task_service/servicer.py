"""The gRPC adapter of TaskService; domain errors become statuses here."""

from __future__ import annotations

import grpc
from task.v1 import task_service_pb2 as pb
from task.v1 import task_service_pb2_grpc as pb_grpc

from .convert import caller_of, to_proto
from .core.policy import Forbidden, TooManyTasks, parse_params
from .core.tasks import InvalidParams, TransitionError
from .kinds import DEFAULT_KIND
from .runner import TaskNotFound, TaskRunner


class TaskServicer(pb_grpc.TaskServiceServicer):
    def __init__(self, runner: TaskRunner) -> None:
        self._runner = runner

    async def StartTask(self, request: pb.StartTaskRequest, context: grpc.aio.ServicerContext) -> pb.StartTaskResponse:
        try:
            params = parse_params(request.params, self._runner.limits.max_params_bytes)
            record = self._runner.start(request.kind or DEFAULT_KIND, params, caller_of(request))
        except InvalidParams as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TooManyTasks as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return pb.StartTaskResponse(task=to_proto(record))

    async def CancelTask(self, request: pb.CancelTaskRequest, context: grpc.aio.ServicerContext) -> pb.CancelTaskResponse:
        try:
            record = self._runner.cancel(request.task_id, caller_of(request))
        except TaskNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except Forbidden as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except TransitionError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.CancelTaskResponse(task=to_proto(record))

    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.GetTaskResponse:
        try:
            record = self._runner.get(request.task_id)
        except TaskNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.GetTaskResponse(task=to_proto(record))

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        return pb.ListTasksResponse(tasks=[to_proto(r) for r in self._runner.book.all()])
