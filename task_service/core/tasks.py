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


class InvalidParams(ValueError):
    """Parameters a caller must fix; becomes INVALID_ARGUMENT."""


MAX_ERROR_CHARS = 1000  # a failed task's error, as recorded and published (an exception's text is unbounded)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, as the edge vouches for it: a verified user (`admin` if the token carries the admin
    role) or an anonymous browser (user None). Where a `Caller | None` is expected, None is a trusted
    internal service: it holds the gRPC credentials and has no browser behind it."""

    user: str | None = None
    admin: bool = False


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
    started_by: Caller | None = None  # None: an internal service's own task

    @property
    def owner(self) -> str | None:
        """The user the task belongs to; None: nobody's (an anonymous browser's or a service's)."""
        return self.started_by.user if self.started_by is not None else None

    def move_to(self, status: Status, now_ms: int, error: str = "") -> None:
        if status not in _ALLOWED.get(self.status, set()):
            raise TransitionError(f"task {self.task_id} is {self.status}; it cannot become {status}")
        self.status = status
        self.error = error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
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

    def active(self) -> list[TaskRecord]:
        """Tasks not finished yet (pending or running), oldest first."""
        return [r for r in self._tasks.values() if not r.status.finished]

    def prune(self) -> None:
        finished = [r.task_id for r in self._tasks.values() if r.status.finished]
        for task_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._tasks[task_id]
