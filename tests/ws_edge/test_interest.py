"""First interests (ws_edge/interest.py): whoever subscribes to a topic while its first subscriber's
ask is unanswered waits for that same answer — a connection or the admin page's tail alike."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.support.deliveries import D
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


async def test_a_position_told_with_an_answer_belongs_to_the_latest_subscription_only():
    """A topic dropped and subscribed again before the first ask's answer: that answer (and what it
    tells of the topic) is for the old subscription; the new one's answer comes with its own ask."""
    push = Push()
    router = DeliveryRouter()
    interests = FirstInterests(router, push)
    interests.route("first", ["t"])
    router.remove_topics("first", ["t"])  # its last subscriber left: the edge asks to drop it
    interests.route("second", ["t"])  # and to add it again
    (_, old), (_, new) = push.asked
    old.set_result(None)  # the old ask's answer is being taken (its callbacks not run yet)
    assert not interests.confirmed_now("t") and interests.applying("t", lambda change: False)
    assert not interests.applying("t", lambda change: change is new)  # someone was answered without it
    new.set_result(None)
    assert interests.confirmed_now("t") and not interests.applying("t", lambda change: False)
    await asyncio.sleep(0)  # callbacks run: nothing is being answered any more
    assert not interests.confirmed_now("t")


async def test_a_subscriber_during_a_first_ask_gets_the_retained_state_routed_before_it_came():
    """The push service's replay of `t`'s retained state reached the edge (and its first subscriber)
    before the ask's answer; a subscriber that comes between the two is not routed that replay, so the
    state known here is handed to it, as to one that comes after the answer."""
    push = Push()
    router = DeliveryRouter()
    interests = FirstInterests(router, push)
    interests.route("first", ["t"])
    router.route([[D(5, retained=True)]])
    waits, retained = interests.route("second", ["t"])
    [(_, ask)] = push.asked
    assert waits == [ask] and retained == [("t", b'{"o":5}')]


async def test_the_replay_of_a_state_handed_to_a_subscriber_during_a_first_ask_reaches_no_one_again():
    """The live state 5 reached the first subscriber while its ask was unanswered, and was handed to a
    second that came then; the push service's replay of the same state, read after the subscription,
    is a repeat for both."""
    push = Push()
    router = DeliveryRouter()
    interests = FirstInterests(router, push)
    interests.route("first", ["t"])
    [[_, _, first_targets, _]] = router.route([[D(5, retained=True)]])  # live
    _, retained = interests.route("second", ["t"])
    assert first_targets == ["first"] and retained == [("t", b'{"o":5}')]
    assert router.route([[D(5, retained=True, replay=True)]]) == []  # its replay
    assert sorted(router.route([[D(6, retained=True)]])[0][2]) == ["first", "second"]
