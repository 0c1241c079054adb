import pytest

from task_service.core.tasks import Progress, Status, TaskBook, TaskRecord, TransitionError
from task_service.kinds import DataCollection, InvalidParams


def test_status_machine():
    record = TaskRecord(kind="k", params={}, created_at_ms=1)
    record.move_to(Status.RUNNING, 2)
    record.move_to(Status.COMPLETED, 3)
    with pytest.raises(TransitionError, match="completed; it cannot become cancelled"):
        record.move_to(Status.CANCELLED, 4)


def test_progress_percentage():
    assert Progress(completed=1, total=3).percentage == 33.33
    assert Progress().percentage == 0.0


def test_book_forgets_oldest_finished_tasks_beyond_the_limit():
    book = TaskBook(keep_finished=1)
    records = [TaskRecord(kind="k", params={}, created_at_ms=i) for i in range(3)]
    for record in records:
        book.add(record)
    records[0].move_to(Status.CANCELLED, 1)
    records[1].move_to(Status.CANCELLED, 1)
    book.prune()
    assert book.all() == [records[1], records[2]]


@pytest.mark.parametrize(
    "params",
    [{"symbols": []}, {"symbols": "BTC"}, {"symbols": [1]}, {"interval": -1}, {"interval": True}, {"fail_at": 3}],
)
def test_data_collection_refuses_bad_params(params):
    with pytest.raises(InvalidParams):
        DataCollection().parse(params)


async def test_data_collection_walks_symbols():
    reports = []

    class Ctx:
        def progress(self, **kw):
            reports.append(kw)

        async def sleep(self, seconds):
            pass

    await DataCollection().run(Ctx(), DataCollection().parse({"symbols": ["A", "B"], "interval": 0}))
    assert reports == [{"completed": 0, "total": 2, "current": ""}, {"completed": 1, "total": 2, "current": "A"},
                       {"completed": 2, "total": 2, "current": "B"}]
