"""The retained `task_list`: publishable whatever the tasks are. No I/O.

The push service refuses a message whose `data` is over its limit (64 KiB by default), and a refused
`task_list` would leave every dashboard with a stale list until the next one that fits. So each task
is listed as a bounded summary (no `params`, which a caller chooses; long strings cut), and the list
holds as many summaries as fit in `max_bytes`: the active tasks first, then the newest finished ones;
`omitted` says how many were left out (the whole of a task: `GetTask`, `GET /api/tasks/{id}`).
"""

from __future__ import annotations

from typing import Any

import orjson

from .tasks import TaskRecord

MAX_SUMMARY_CHARS = 128  # kind, progress.current
MAX_SUMMARY_ERROR_CHARS = 256
# `{"tasks":[],"omitted":N}` around the summaries, N at most 20 digits.
_FRAME_BYTES = len(b'{"tasks":[],"omitted":}') + 20


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(record: TaskRecord) -> dict[str, Any]:
    """A task in the list: the Task shape of the HTTP API and acks, without `params`, strings cut."""
    progress = record.progress
    return {
        "task_id": record.task_id,
        "kind": _cut(record.kind, MAX_SUMMARY_CHARS),
        "status": record.status.value,
        "progress": {"percentage": progress.percentage, "current": _cut(progress.current, MAX_SUMMARY_CHARS),
                     "total": progress.total, "completed": progress.completed},
        "error": _cut(record.error, MAX_SUMMARY_ERROR_CHARS) or None,
        "owner": record.owner,
        "created_at": record.created_at_ms,
        "updated_at": record.updated_at_ms,
    }


def task_list_data(records: list[TaskRecord], max_bytes: int) -> dict[str, Any]:
    """`task_list`'s data for `records` (oldest first), at most `max_bytes` of JSON, in the same order."""
    summaries = [summary(r) for r in records]
    sizes = [len(orjson.dumps(s)) for s in summaries]
    # Active tasks first, then finished ones; the newest first within each.
    priority = sorted(range(len(records)), key=lambda i: (records[i].status.finished, -i))
    kept: list[int] = []
    size = _FRAME_BYTES
    for i in priority:
        cost = sizes[i] + 1  # and a comma
        if size + cost > max_bytes:
            break
        kept.append(i)
        size += cost
    kept.sort()
    return {"tasks": [summaries[i] for i in kept], "omitted": len(records) - len(kept)}
