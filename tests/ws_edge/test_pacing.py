"""The fan-out loop's rest: only after long rounds of an edge that spends most of its time in them."""

from __future__ import annotations

import pytest

from ws_edge.core.pacing import FanoutPacing


def rests(pacing: FanoutPacing, rounds: list[tuple[float, float]]) -> list[float]:
    return [pacing.after_round(took, cycle) for took, cycle in rounds]


def test_an_edge_that_keeps_up_never_rests():
    pacing = FanoutPacing()
    # 5 ms rounds every 10 ms (100 messages a second to 1,000 sockets): half the time busy.
    assert rests(pacing, [(0.005, 0.010)] * 50) == [0.0] * 50
    assert pacing.busy == pytest.approx(0.5, abs=0.01)


def test_a_saturated_edge_rests_as_long_as_a_round_at_most_max_rest():
    pacing = FanoutPacing()
    saturated = rests(pacing, [(0.003, 0.0031)] * 10)
    assert saturated[:7] == [0.0] * 7  # the average has to climb past 0.9 first: a burst is not load
    assert saturated[7:] == [0.003] * 3
    assert rests(pacing, [(0.020, 0.0201)]) == [0.005]  # never more than max_rest


def test_a_message_now_and_then_during_a_round_brings_no_rest():
    pacing = FanoutPacing()
    # 7 ms rounds every 10 ms (100 messages a second to 1,000 sockets), and every third round finds the
    # next message already waiting (its cycle is the round alone): the average swings over 0.77-0.84.
    taken, highest = [], 0.0
    for took, cycle in [(0.007, 0.010), (0.007, 0.010), (0.007, 0.007)] * 20:
        taken.append(pacing.after_round(took, cycle))
        highest = max(highest, pacing.busy)
    assert taken == [0.0] * 60
    assert 0.75 < highest < 0.9  # past the share that brought a rest before (issue 18), under today's


def test_short_rounds_never_rest_however_busy():
    pacing = FanoutPacing()
    assert rests(pacing, [(0.0009, 0.0009)] * 20) == [0.0] * 20  # few sockets: nothing to gather for
    assert pacing.busy > 0.99


def test_the_rest_stops_once_the_edge_keeps_up_again():
    pacing = FanoutPacing()
    rests(pacing, [(0.004, 0.004)] * 20)
    assert rests(pacing, [(0.004, 0.004)]) == [0.004]
    after = rests(pacing, [(0.004, 0.012)] * 10)  # a third of the time busy again
    assert after == [0.0] * 10  # the first round that keeps up brings the average under 0.9
