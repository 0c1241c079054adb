import pytest

from task_service.core.policy import (
    Forbidden,
    TaskLimits,
    TooManyTasks,
    admit,
    check_cancel,
    may_cancel,
    parse_params,
)
from task_service.core.tasks import MAX_ERROR_CHARS, Caller, InvalidParams, Status, TaskRecord

ALICE, BOB = Caller("alice"), Caller("bob")
ADMIN = Caller("root", admin=True)
ANONYMOUS = Caller(None)
SERVICE = None  # a request without a caller: a trusted internal service


def task(started_by: Caller | None, status: Status = Status.PENDING) -> TaskRecord:
    record = TaskRecord(kind="k", params={}, created_at_ms=1, started_by=started_by)
    if status is not Status.PENDING:
        record.move_to(status, 2)
    return record


def test_params_are_a_json_object_within_the_byte_bound():
    assert parse_params(b"", 100) == {}
    assert parse_params(b'{"symbols": ["A"]}', 100) == {"symbols": ["A"]}
    with pytest.raises(InvalidParams) as refused:
        parse_params(b"[1]", 100)
    assert str(refused.value) == "params must be a JSON object"
    with pytest.raises(InvalidParams) as refused:
        parse_params(b"{oops", 100)
    assert str(refused.value).startswith("params are not valid JSON: ")
    big = b'{"symbols": [' + b",".join([b'"' + b"S" * 32 + b'"'] * 1000) + b"]}"
    with pytest.raises(InvalidParams) as refused:
        parse_params(big, 16384)
    assert str(refused.value) == "params are 35014 bytes of JSON; at most 16384"


@pytest.mark.parametrize(
    ("started_by", "caller", "allowed"),
    [
        (ALICE, ALICE, True),
        (ALICE, BOB, False),
        (ALICE, ANONYMOUS, False),
        (ALICE, ADMIN, True),
        (ALICE, SERVICE, True),
        (ANONYMOUS, BOB, True),  # an anonymous browser's task: anyone, as before ownership existed
        (ANONYMOUS, ANONYMOUS, True),
        (SERVICE, BOB, False),  # an internal service's own task: services and admins only
        (SERVICE, ANONYMOUS, False),
        (SERVICE, ADMIN, True),
        (SERVICE, SERVICE, True),
        (Caller("alice", admin=True), Caller("alice"), True),  # the owner, whatever their role was
    ],
)
def test_who_may_cancel(started_by, caller, allowed):
    assert may_cancel(task(started_by), caller) is allowed


def test_a_refused_cancel_says_whose_task_it_is():
    record = task(ALICE)
    with pytest.raises(Forbidden) as refused:
        check_cancel(record, BOB)
    assert str(refused.value) == f"task {record.task_id} belongs to user 'alice'; only its owner or an admin may cancel it"
    service_task = task(SERVICE)
    with pytest.raises(Forbidden) as refused:
        check_cancel(service_task, BOB)
    assert str(refused.value) == (f"task {service_task.task_id} was started by an internal service; only services "
                                  "and admins may cancel it")


def test_admission_counts_active_tasks_per_user_and_in_all():
    limits = TaskLimits(max_active=4, max_active_per_user=2)
    active = [task(ALICE), task(ALICE, Status.RUNNING)]
    with pytest.raises(TooManyTasks) as refused:
        admit(active, ALICE, limits)
    assert str(refused.value) == ("user 'alice' already has 2 tasks pending or running, the most allowed; "
                                  "retry when one has finished")
    with pytest.raises(TooManyTasks):
        admit(active, Caller("alice", admin=True), limits)  # admins are held to the limits too
    admit(active, BOB, limits)
    admit(active, SERVICE, limits)  # services have no allowance of their own
    anonymous = [task(ANONYMOUS), task(ANONYMOUS)]
    with pytest.raises(TooManyTasks) as refused:
        admit(anonymous, ANONYMOUS, limits)
    assert str(refused.value).startswith("anonymous users (all together) already has 2 tasks")
    full = [task(ALICE), task(BOB), task(SERVICE), task(SERVICE)]
    for caller in (Caller("carol"), SERVICE, ADMIN):
        with pytest.raises(TooManyTasks) as refused:
            admit(full, caller, limits)
        assert str(refused.value) == "4 tasks are pending or running, the most there may be; retry when one has finished"


def test_a_failed_tasks_error_is_bounded():
    record = task(SERVICE, Status.RUNNING)
    record.move_to(Status.FAILED, 3, error="x" * 100_000)
    assert len(record.error) == MAX_ERROR_CHARS and record.error.endswith("…")
