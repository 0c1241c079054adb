"""Who may do what with tasks, and how much: the task service's rules, in one place. No I/O.

- Parameters: a JSON object of at most `max_params_bytes` (then the kind checks its own fields).
- Ownership: a task belongs to the user who started it. Its owner, an admin, or an internal service
  (a request without a caller) may cancel it. A task started by an anonymous browser is nobody's and
  anyone may cancel it (the edge only lets anonymous browsers control tasks where the deployment
  allows it: EDGE_TASK_CONTROL=public). A task an internal service started for itself (no caller) is
  cancelled by internal services and admins only.
- Admission: at most `max_active` tasks not finished in all, and `max_active_per_user` per user;
  anonymous browsers share one allowance (they cannot be told apart), internal services have none of
  their own but count towards the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .tasks import Caller, InvalidParams, TaskRecord

MAX_USER_ID_CHARS = 100  # as the edge accepts a token's `sub`


class Forbidden(Exception):
    """The caller may not do this to this task; becomes PERMISSION_DENIED."""


class TooManyTasks(Exception):
    """Over a limit of tasks not finished yet; becomes RESOURCE_EXHAUSTED. Retry when one finished."""


@dataclass(frozen=True, slots=True)
class TaskLimits:
    max_params_bytes: int = 16384
    max_active: int = 100
    max_active_per_user: int = 10


def parse_params(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """A StartTask request's `params` bytes: empty (no parameters) or a UTF-8 JSON object within bounds."""
    if len(raw) > max_bytes:
        raise InvalidParams(f"params are {len(raw)} bytes of JSON; at most {max_bytes}")
    if not raw:
        return {}
    try:
        params = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidParams(f"params are not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise InvalidParams("params must be a JSON object")
    return params


def check_caller(caller: Caller | None) -> None:
    if caller is not None and caller.user is not None and len(caller.user) > MAX_USER_ID_CHARS:
        raise InvalidParams(f"caller.user must be a user id of at most {MAX_USER_ID_CHARS} characters")


def admit(active: list[TaskRecord], caller: Caller | None, limits: TaskLimits) -> None:
    """Raise TooManyTasks unless one more task for `caller` stays within the limits."""
    if len(active) >= limits.max_active:
        raise TooManyTasks(f"{len(active)} tasks are pending or running, the most there may be; "
                           "retry when one has finished")
    if caller is None:
        return
    theirs = sum(1 for r in active if r.started_by is not None and r.started_by.user == caller.user)
    if theirs >= limits.max_active_per_user:
        who = f"user {caller.user!r}" if caller.user is not None else "anonymous users (all together)"
        raise TooManyTasks(f"{who} already has {theirs} tasks pending or running, the most allowed; "
                           "retry when one has finished")


def may_cancel(record: TaskRecord, caller: Caller | None) -> bool:
    if caller is None or caller.admin:
        return True
    if record.started_by is None:
        return False  # an internal service's own task
    if record.started_by.user is None:
        return True  # an anonymous browser's task: anyone (who may control tasks at all)
    return record.started_by.user == caller.user


def check_cancel(record: TaskRecord, caller: Caller | None) -> None:
    if not may_cancel(record, caller):
        if record.owner is None:
            raise Forbidden(f"task {record.task_id} was started by an internal service; only services and "
                            "admins may cancel it")
        raise Forbidden(f"task {record.task_id} belongs to user {record.owner!r}; only its owner or an admin "
                        "may cancel it")
