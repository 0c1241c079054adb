import orjson

from ws_edge.core.joinleave import JoinLeaveGate


def test_events_under_the_rate_go_one_by_one():
    gate = JoinLeaveGate(rate=5, interval=1.0)
    assert [gate.event("t", True, now=i * 0.25, now_ms=0) for i in range(20)] == [True] * 20
    assert gate.deadline() is None and gate.summarised == 0


def test_past_the_rate_events_become_one_summary_per_interval_then_flow_again():
    gate = JoinLeaveGate(rate=5, interval=1.0)
    sent = [gate.event("t", i % 2 == 0, now=0.0, now_ms=1000) for i in range(12)]
    assert sent == [True] * 5 + [False] * 7
    assert gate.deadline() == 1.0
    assert gate.due(now=0.5, now_ms=1500) == []
    assert gate.event("u", True, now=0.5, now_ms=1500)  # another topic has its own rate
    [(topic, frame)] = gate.due(now=1.0, now_ms=2000)
    summary = orjson.loads(frame)
    assert topic == "t" and summary["type"] == "presence_summary" and summary["topic"] == "t"
    assert summary["data"] == {"joins": 3, "leaves": 4, "since": 1000} and summary["timestamp"] == 2000
    assert gate.summarised == 7
    assert not gate.event("t", False, now=1.5, now_ms=2500)  # still summarising: counted
    [(_, frame)] = gate.due(now=2.0, now_ms=3000)
    assert orjson.loads(frame)["data"] == {"joins": 0, "leaves": 1, "since": 2000}
    assert gate.due(now=3.0, now_ms=4000) == []  # a quiet interval: back to one by one
    assert gate.deadline() is None
    assert gate.event("t", True, now=3.1, now_ms=4100)


def test_quiet_topics_are_forgotten():
    gate = JoinLeaveGate(rate=5, interval=1.0)
    gate.event("t", True, now=0.0, now_ms=0)
    assert len(gate) == 1
    gate.due(now=10.0, now_ms=0)
    assert len(gate) == 0
