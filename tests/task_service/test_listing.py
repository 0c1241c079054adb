import orjson

from task_service.core.listing import summary, task_list_data
from task_service.core.tasks import Caller, Status, TaskRecord

HUGE_PARAMS = {"symbols": ["S" * 32] * 1000}


def record(i: int, status: Status = Status.PENDING, owner: str | None = "alice") -> TaskRecord:
    r = TaskRecord(kind="data_collection", params=HUGE_PARAMS, created_at_ms=i, task_id=f"t{i:04}",
                   started_by=Caller(owner))
    r.updated_at_ms = i
    if status is not Status.PENDING:
        r.move_to(Status.RUNNING, i)
        if status is not Status.RUNNING:
            r.move_to(status, i, error="e" * 5000 if status is Status.FAILED else "")
    return r


def test_a_summary_is_the_task_without_params_and_with_short_strings():
    r = record(1, Status.FAILED)
    r.progress.completed, r.progress.total, r.progress.current = 1, 3, "C" * 500
    assert summary(r) == {
        "task_id": "t0001", "kind": "data_collection", "status": "failed",
        "progress": {"percentage": 33.33, "current": "C" * 127 + "…", "total": 3, "completed": 1},
        "error": "e" * 255 + "…", "owner": "alice", "created_at": 1, "updated_at": 1,
    }
    assert summary(record(2, owner=None))["owner"] is None


def test_the_list_of_few_tasks_is_whole_and_oldest_first():
    records = [record(i) for i in range(3)]
    data = task_list_data(records, 48 * 1024)
    assert data == {"tasks": [summary(r) for r in records], "omitted": 0}


def test_the_list_stays_within_its_bound_keeping_active_then_newest_finished():
    # The case: many tasks with 1,000 symbols of 32 characters (and long errors) used to make a
    # task_list over the push service's 64 KiB, refused, leaving every dashboard stale.
    finished = [record(i, Status.FAILED) for i in range(150)]
    active = [record(150 + i, Status.RUNNING) for i in range(20)]
    records = finished[:75] + active[:10] + finished[75:] + active[10:]
    bound = 16 * 1024
    data = task_list_data(records, bound)
    assert len(orjson.dumps(data)) <= bound
    listed = [t["task_id"] for t in data["tasks"]]
    assert data["omitted"] == len(records) - len(listed) > 0
    # Every active task is listed; the finished ones listed are the newest; the order is the book's.
    assert {r.task_id for r in active} <= set(listed)
    kept_finished = [t for t in listed if t in {r.task_id for r in finished}]
    assert kept_finished == [r.task_id for r in finished[-len(kept_finished):]] and kept_finished
    assert listed == [r.task_id for r in records if r.task_id in set(listed)]


def test_the_list_fits_even_when_the_active_tasks_alone_do_not():
    records = [record(i, Status.RUNNING) for i in range(500)]
    data = task_list_data(records, 4096)
    assert len(orjson.dumps(data)) <= 4096
    assert [t["task_id"] for t in data["tasks"]] == [r.task_id for r in records[-len(data["tasks"]):]]
    assert data["omitted"] == 500 - len(data["tasks"])
