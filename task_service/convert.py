"""TaskRecord -> task.v1.Task, task.v1.Caller -> Caller. The JSON shape browsers see is derived from the proto (pushclient.task_json)."""

from __future__ import annotations

import orjson
from task.v1 import task_service_pb2 as pb

from pushclient.task_json import STATUS_PREFIX

from .core.tasks import Caller, Status, TaskRecord


def status_to_proto(status: Status) -> int:
    """Status.RUNNING -> TASK_STATUS_RUNNING, by name (pushclient.task_json maps it back the same way)."""
    return pb.TaskStatus.Value(STATUS_PREFIX + status.name)  # type: ignore[no-any-return]


def to_proto(record: TaskRecord) -> pb.Task:
    progress = record.progress
    return pb.Task(
        task_id=record.task_id,
        kind=record.kind,
        status=status_to_proto(record.status),
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
