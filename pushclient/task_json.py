"""The JSON shape of a task.v1.Task: used in `task_status`/`task_list` frames and the edge's HTTP API."""

from __future__ import annotations

from typing import Any

import orjson
from task.v1 import task_service_pb2 as pb

STATUS_PREFIX = "TASK_STATUS_"


def status_name(status: int) -> str:
    """`TASK_STATUS_RUNNING` -> "running": the JSON name is the proto enum's, so no map can drift."""
    try:
        return pb.TaskStatus.Name(status).removeprefix(STATUS_PREFIX).lower()  # type: ignore[arg-type]
    except ValueError:
        return "unknown"


def progress_json(progress: pb.TaskProgress) -> dict[str, Any]:
    return {
        "percentage": round(progress.percentage, 2),
        "current": progress.current,
        "total": progress.total,
        "completed": progress.completed,
    }


def task_json(task: pb.Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "kind": task.kind,
        "status": status_name(task.status),
        "progress": progress_json(task.progress),
        "params": orjson.loads(task.params) if task.params else {},
        "error": task.error or None,
        "owner": task.owner or None,
        "created_at": task.created_at_ms,
        "updated_at": task.updated_at_ms,
    }
