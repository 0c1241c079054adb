"""Task records and their state machine: pending -> running -> completed | failed | cancelled."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


_ALLOWED = {
    Status.PENDING: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
    Status.RUNNING: {Status.COMPLETED, Status.FAILED, Status.CANCELLED},
}


class TransitionError(Exception):
    """A status change the state machine does not allow (e.g. cancelling a completed task)."""


@dataclass
class Progress:
    completed: int = 0
    total: int = 0
    current: str = ""

    @property
    def percentage(self) -> float:
        return round(100.0 * self.completed / self.total, 2) if self.total else 0.0


@dataclass
class TaskRecord:
    kind: str
    params: dict[str, Any]
    created_at_ms: int
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    status: Status = Status.PENDING
    progress: Progress = field(default_factory=Progress)
    error: str = ""
    updated_at_ms: int = 0

    def move_to(self, status: Status, now_ms: int, error: str = "") -> None:
        if status not in _ALLOWED.get(self.status, set()):
            raise TransitionError(f"task {self.task_id} is {self.status}; it cannot become {status}")
        self.status = status
        self.error = error
        self.updated_at_ms = now_ms


class TaskBook:
    """Every task still remembered, oldest first; finished ones beyond `keep_finished` are forgotten."""

    def __init__(self, keep_finished: int = 100) -> None:
        self.keep_finished = keep_finished
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()

    def add(self, record: TaskRecord) -> None:
        self._tasks[record.task_id] = record
        self.prune()

    def get(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def all(self) -> list[TaskRecord]:
        return list(self._tasks.values())

    def prune(self) -> None:
        finished = [r.task_id for r in self._tasks.values() if r.status.finished]
        for task_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._tasks[task_id]
