"""TaskRecord -> task.v1.Task, task.v1.Caller -> Caller. The JSON shape browsers see is derived from the proto (common.task_json)."""

from __future__ import annotations

import orjson
from task.v1 import task_service_pb2 as pb

from .core.tasks import Caller, Status, TaskRecord

STATUS_TO_PROTO = {
    Status.PENDING: pb.TASK_STATUS_PENDING,
    Status.RUNNING: pb.TASK_STATUS_RUNNING,
    Status.COMPLETED: pb.TASK_STATUS_COMPLETED,
    Status.FAILED: pb.TASK_STATUS_FAILED,
    Status.CANCELLED: pb.TASK_STATUS_CANCELLED,
}


def to_proto(record: TaskRecord) -> pb.Task:
    progress = record.progress
    return pb.Task(
        task_id=record.task_id,
        kind=record.kind,
        status=STATUS_TO_PROTO[record.status],
        progress=pb.TaskProgress(
            percentage=progress.percentage, current=progress.current, total=progress.total,
            completed=progress.completed,
        ),
        params=orjson.dumps(record.params),
        error=record.error,
        created_at_ms=record.created_at_ms,
        updated_at_ms=record.updated_at_ms,
        owner=record.owner or "",
    )


def caller_of(request: pb.StartTaskRequest | pb.CancelTaskRequest) -> Caller | None:
    """The request's caller; None when it has none (a trusted internal service)."""
    if not request.HasField("caller"):
        return None
    return Caller(user=request.caller.user or None, admin=request.caller.admin)
