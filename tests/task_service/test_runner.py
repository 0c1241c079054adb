"""The task runner against a real push service: how tasks end whatever their code does, and what the
list published then holds."""

from __future__ import annotations

import asyncio
from typing import Any

from pushclient import PushClient, StreamPublisher
from task_service.core.policy import TaskLimits
from task_service.core.tasks import Caller, Status
from task_service.kinds import KindRegistry, kinds
from task_service.runner import TaskRunner
from tests.support.timing import timeout
from tests.task_service.conftest import history, until


def of_task(messages: list[dict], task_id: str) -> list[dict]:
    return [m["data"] for m in messages if m["data"]["task_id"] == task_id]


async def test_a_task_whose_code_is_cancelled_without_a_cancel_request_fails_and_frees_its_place(
        push: PushClient, publisher: StreamPublisher):
    registry = KindRegistry()

    @registry.register("stray_cancel")
    class StrayCancel:
        def parse(self, params: dict[str, Any]) -> None:
            return None

        async def run(self, ctx: Any, config: None) -> None:
            ctx.progress(completed=0, total=1, current="")
            # Something the kind awaits is cancelled by other code (a library's own time-out, a
            # connection closed under it): TaskRunner.cancel had nothing to do with it.
            waiting = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(waiting.cancel)
            await waiting

    runner = TaskRunner(registry, publisher, limits=TaskLimits(max_active_per_user=1))
    alice = Caller("alice")
    first = runner.start("stray_cancel", {}, alice)
    await until(lambda: first.status.finished, "the task finished")
    error = "interrupted: the task's code was cancelled, not by a cancel request"
    assert (first.status, first.error, runner.active, runner.book.active()) == (Status.FAILED, error, 0, [])
    second = runner.start("stray_cancel", {}, alice)  # her only place is free again
    await until(lambda: second.status.finished, "the second task finished")

    await asyncio.wait_for(publisher.flush(), timeout(10))
    statuses = of_task(await history(push, "task:status"), first.task_id)
    assert [(s["status"], s.get("error")) for s in statuses] == [("pending", None), ("running", None),
                                                                   ("failed", error)]
    listed = {t["task_id"]: (t["status"], t["error"]) for t in (await history(push, "task:list"))[-1]["data"]["tasks"]}
    assert listed == {first.task_id: ("failed", error), second.task_id: ("failed", error)}


async def test_code_that_goes_on_after_a_cancel_publishes_nothing_more_and_ends_quietly(
        push: PushClient, publisher: StreamPublisher):
    registry = KindRegistry()
    asleep, went_on = asyncio.Event(), asyncio.Event()
    running: list[asyncio.Task] = []

    @registry.register("stubborn")
    class Stubborn:
        def parse(self, params: dict[str, Any]) -> None:
            return None

        async def run(self, ctx: Any, config: None) -> None:
            running.append(asyncio.current_task())  # type: ignore[arg-type]
            ctx.progress(completed=0, total=2, current="")
            try:
                asleep.set()
                await ctx.sleep(3600)
            except asyncio.CancelledError:
                pass  # a kind that swallows its cancellation and carries on
            ctx.progress(completed=2, total=2, current="after the cancel")
            went_on.set()

    runner = TaskRunner(registry, publisher)
    record = runner.start("stubborn", {})
    await asyncio.wait_for(asleep.wait(), timeout(10))
    assert runner.cancel(record.task_id).status is Status.CANCELLED
    await asyncio.wait_for(went_on.wait(), timeout(10))
    assert await asyncio.wait_for(running[0], timeout(10)) is None  # no TransitionError inside it
    assert (record.status, record.progress.completed, runner.active) == (Status.CANCELLED, 0, 0)

    await asyncio.wait_for(publisher.flush(), timeout(10))
    assert [p["progress"]["completed"] for p in of_task(await history(push, "task:progress"), record.task_id)] == [0]
    assert [s["status"] for s in of_task(await history(push, "task:status"), record.task_id)] == [
        "pending", "running", "cancelled"]


async def test_the_list_published_when_a_task_finishes_leaves_out_the_task_forgotten_then(
        push: PushClient, publisher: StreamPublisher):
    runner = TaskRunner(kinds, publisher, keep_finished=1)
    first = runner.start("data_collection", {"symbols": ["A"], "interval": 0})
    await until(lambda: first.status.finished, "the first task finished")
    second = runner.start("data_collection", {"symbols": ["B"], "interval": 0})
    await until(lambda: second.status.finished, "the second task finished")
    assert [r.task_id for r in runner.book.all()] == [second.task_id]  # the first is forgotten

    await asyncio.wait_for(publisher.flush(), timeout(10))
    lists = [[t["task_id"] for t in m["data"]["tasks"]] for m in await history(push, "task:list")]
    # The last list, published when the second completed, is the book as GetTask sees it.
    assert lists[-1] == [second.task_id]
    assert [t["status"] for t in (await history(push, "task:list"))[-1]["data"]["tasks"]] == ["completed"]
