"""Runs tasks as asyncio tasks and publishes what happens to them.

Topics (the guide's): `task:progress` (`task_progress`), `task:status` (`task_status`) and
`task:list` (`task_list`, retained, so a new subscriber gets the current list at once).

Progress and lists carry a conflation key (the task id; one fixed key for every list): a newer one
may replace an older one not sent yet in the publisher's buffer, and a full buffer drops them first.
Statuses carry none: they are dropped only when nothing else can go (pushclient.PublishBuffer).
"""

from __future__ import annotations

import asyncio
import logging
from itertools import count
from typing import Any

from common.clock import now_ms
from pushclient import StreamPublisher, outgoing
from pushclient.task_json import progress_json

from .convert import to_proto
from .core.listing import task_list_data
from .core.policy import TaskLimits, admit, check_caller, check_cancel
from .core.tasks import Caller, Status, TaskBook, TaskRecord
from .kinds import InvalidParams, KindRegistry
from .metrics import FINISHED, STARTED

log = logging.getLogger("task_service.runner")
# Every task_list supersedes every earlier one (it is the retained state, not an event): one key for all.
LIST_CONFLATION_KEY = "task_list"
# Why a task whose kind was cancelled by something other than TaskRunner.cancel ended (kept short: it is
# published in task_status and the list).
STRAY_CANCEL_ERROR = "interrupted: the task's code was cancelled, not by a cancel request"


class UnknownKind(InvalidParams):
    pass


class TaskNotFound(LookupError):
    pass


class _Context:
    def __init__(self, runner: TaskRunner, record: TaskRecord) -> None:
        self._runner = runner
        self._record = record

    def progress(self, *, completed: int, total: int, current: str) -> None:
        if self._record.status.finished:
            return  # cancelled while the kind's code went on: nothing may follow the final status
        progress = self._record.progress
        progress.completed, progress.total, progress.current = completed, total, current
        self._record.updated_at_ms = now_ms()
        self._runner.publish_progress(self._record)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TaskRunner:
    def __init__(self, kinds: KindRegistry, publisher: StreamPublisher, *, keep_finished: int = 100,
                 limits: TaskLimits | None = None, list_max_bytes: int = 49152) -> None:
        self._kinds = kinds
        self._publisher = publisher
        self.limits = limits or TaskLimits()
        self._list_max_bytes = list_max_bytes
        self.book = TaskBook(keep_finished)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ids = count(1)

    def start(self, kind_name: str, params: dict[str, Any], caller: Caller | None = None) -> TaskRecord:
        """Start a task for `caller` (None: an internal service's own). Raises InvalidParams, TooManyTasks."""
        check_caller(caller)
        kind = self._kinds.get(kind_name)
        if kind is None:
            raise UnknownKind(f"unknown task kind {kind_name[:64]!r}; known: {', '.join(self._kinds.names())}")
        config = kind.parse(params)
        admit(self.book.active(), caller, self.limits)
        record = TaskRecord(kind=kind_name, params=params, created_at_ms=now_ms(), started_by=caller)
        record.updated_at_ms = record.created_at_ms
        self.book.add(record)
        STARTED.labels(kind_name).inc()
        self._publish_status(record)
        self._running[record.task_id] = asyncio.create_task(self._run(record, kind, config),
                                                            name=f"task:{record.task_id}")
        return record

    def get(self, task_id: str) -> TaskRecord:
        record = self.book.get(task_id)
        if record is None:
            raise TaskNotFound(f"no task {task_id!r}")
        return record

    def cancel(self, task_id: str, caller: Caller | None = None) -> TaskRecord:
        """Cancel a pending or running task for `caller` (None: an internal service); raises Forbidden
        when it is not theirs, TransitionError when it has already finished."""
        record = self.get(task_id)
        check_cancel(record, caller)
        record.move_to(Status.CANCELLED, now_ms())
        task = self._running.pop(task_id, None)
        if task is not None:
            task.cancel()
        self._finish(record)
        return record

    async def close(self) -> None:
        """Shutting down: running and pending tasks are marked failed ("interrupted"), published."""
        for task_id, task in list(self._running.items()):
            record = self.book.get(task_id)
            task.cancel()
            self._running.pop(task_id, None)
            if record is not None and not record.status.finished:
                record.move_to(Status.FAILED, now_ms(), error="interrupted: the task service shut down")
                self._finish(record)

    async def _run(self, record: TaskRecord, kind: Any, config: Any) -> None:
        try:
            record.move_to(Status.RUNNING, now_ms())
            self._publish_status(record)
            await kind.run(_Context(self, record), config)
        except asyncio.CancelledError:
            if record.status.finished:
                return  # `cancel` (or `close`) already recorded and published it
            # Something the kind awaited was cancelled, or someone cancelled this asyncio task, without
            # TaskRunner.cancel: left running, the task would hold its slot in the limits for ever.
            log.warning("task %s: its code was cancelled without a cancel request", record.task_id)
            outcome, error = Status.FAILED, STRAY_CANCEL_ERROR
        except Exception as exc:
            log.warning("task %s failed: %s", record.task_id, exc)
            outcome, error = Status.FAILED, str(exc)
        else:
            outcome, error = Status.COMPLETED, ""
        if record.status.finished:
            return  # cancelled while the kind's code went on (it caught the cancellation): that status stands
        record.move_to(outcome, now_ms(), error=error)
        self._running.pop(record.task_id, None)
        self._finish(record)

    @property
    def active(self) -> int:
        return len(self._running)

    def _finish(self, record: TaskRecord) -> None:
        FINISHED.labels(record.status.value).inc()
        self.book.prune()  # first: a task forgotten now must not be in the list (GetTask would not find it)
        self._publish_status(record)

    # --- publishing -----------------------------------------------------------------------------

    def publish_progress(self, record: TaskRecord) -> None:
        self._publisher.submit(
            outgoing(
                "task:progress",
                "task_progress",
                {"task_id": record.task_id, "progress": progress_json(to_proto(record).progress)},
                id=f"progress_{record.task_id}_{next(self._ids)}",
                conflation_key=record.task_id,  # a slow client may skip to this task's latest progress
            )
        )

    def _publish_status(self, record: TaskRecord) -> None:
        data: dict[str, Any] = {"task_id": record.task_id, "status": record.status.value, "kind": record.kind}
        if record.error:
            data["error"] = record.error
        self._publisher.submit(
            outgoing("task:status", "task_status", data, id=f"status_{record.task_id}_{next(self._ids)}")
        )
        self._submit_list()

    def publish_list(self) -> None:
        """The current list (possibly empty), retained, replacing an older list not sent yet. Called
        at start, so that a list a previous process left (its tasks can never finish now) is replaced,
        and each time the publisher's stream connects, since a push service that restarted (memory
        broker) has lost it and new dashboards would stay empty until the next status change."""
        self._submit_list(supersede=True)

    def _submit_list(self, *, supersede: bool = False) -> None:
        self._publisher.submit(
            outgoing(
                "task:list",
                "task_list",
                task_list_data(self.book.all(), self._list_max_bytes),
                id=f"list_{next(self._ids)}",
                retain=True,
                conflation_key=LIST_CONFLATION_KEY,
            ),
            supersede=supersede,
        )

