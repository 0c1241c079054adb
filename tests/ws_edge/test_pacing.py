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
    assert saturated[:4] == [0.0] * 4  # the average has to climb past 0.75 first: a burst is not load
    assert saturated[4:] == [0.003] * 6
    assert rests(pacing, [(0.020, 0.0201)]) == [0.005]  # never more than max_rest


def test_short_rounds_never_rest_however_busy():
    pacing = FanoutPacing()
    assert rests(pacing, [(0.0009, 0.0009)] * 20) == [0.0] * 20  # few sockets: nothing to gather for
    assert pacing.busy > 0.99


def test_the_rest_stops_once_the_edge_keeps_up_again():
    pacing = FanoutPacing()
    rests(pacing, [(0.004, 0.004)] * 20)
    after = rests(pacing, [(0.004, 0.012)] * 10)  # a third of the time busy again
    assert after[0] == 0.004 and after[-1] == 0.0
    assert after.index(0.0) <= 3
