"""First interests (ws_edge/interest.py): whoever subscribes to a topic while its first subscriber's
ask is unanswered waits for that same answer — a connection or the admin page's tail alike."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ws_edge.core.routing import DeliveryRouter
from ws_edge.interest import FirstInterests


class Push:
    def __init__(self) -> None:
        self.asked: list[tuple[list[str], asyncio.Future[None]]] = []

    def change(self, *, add_topics: Sequence[str] = ()) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.asked.append((list(add_topics), future))
        return future


async def test_a_subscriber_during_a_first_ask_waits_for_it_and_one_after_it_does_not():
    push = Push()
    interests = FirstInterests(DeliveryRouter(), push)
    first_waits, _ = interests.route("connection", ["t"])
    tail_waits, _ = interests.route("tail", ["t"])  # while the first ask is unanswered
    [(topics, ask)] = push.asked
    assert topics == ["t"] and first_waits == [ask] and tail_waits == [ask]
    ask.set_result(None)
    await asyncio.sleep(0)  # its done-callbacks run
    assert interests.route("late", ["t"]) == ([], [])  # applied: nothing to wait for, nothing asked
    assert len(push.asked) == 1
