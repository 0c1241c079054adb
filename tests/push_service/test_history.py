import orjson
import pytest

from push_service.core.history import HistoryPolicy, HistoryRule, HistoryStore
from push_service.core.publication import make_publication


def pub(topic: str, n: int, client_id: str = ""):  # type: ignore[no-untyped-def]
    return make_publication(topic=topic, type_="t", data=orjson.dumps({"n": n}), id_=f"m{n}", client_id=client_id,
                            retain=False, now_ms=1, max_data_bytes=1000)


def store(size: int = 3, ttl: float = 10) -> HistoryStore:
    return HistoryStore(HistoryPolicy((HistoryRule("h:*", size, ttl), HistoryRule("*", 0, 0))), epoch="e1")


def test_positions_are_added_to_the_frame():
    history = store()
    first, second = history.append(pub("h:a", 1), 0), history.append(pub("h:a", 2), 0)
    assert (first.offset, second.offset, second.epoch) == (1, 2, "e1")
    assert orjson.loads(second.frame) == {"type": "t", "id": "m2", "timestamp": 1, "data": {"n": 2}, "topic": "h:a",
                                          "offset": 2, "epoch": "e1"}
    plain = history.append(pub("other", 3), 0)
    assert (plain.offset, plain.epoch) == (0, "") and b"offset" not in plain.frame
    personal = history.append(pub("", 4, client_id="c"), 0)
    assert personal.offset == 0


def test_recovery_gives_exactly_what_came_after():
    history = store(size=10)
    for n in range(1, 6):
        history.append(pub("h:a", n), 0)
    read = history.read("h:a", since=2, epoch="e1", now=1)
    assert (read.recovered, [p.offset for p in read.publications], read.offset) == (True, [3, 4, 5], 5)
    assert history.read("h:a", since=5, epoch="e1", now=1).publications == []


@pytest.mark.parametrize(("since", "epoch", "reason"), [(1, "e0", "epoch changed"), (9, "e1", "ahead of the stream"),
                                                        (0, "e1", "too old")])
def test_recovery_that_cannot_be_honoured_says_why(since, epoch, reason):
    history = store(size=3)
    for n in range(1, 6):  # keeps 3, 4, 5
        history.append(pub("h:a", n), 0)
    read = history.read("h:a", since=since, epoch=epoch, now=1)
    assert (read.recovered, read.reason, read.publications) == (False, reason, [])
    assert history.read("h:a", since=2, epoch="e1", now=1).recovered  # 3, 4, 5: nothing lost


def test_age_bound_and_latest():
    history = store(size=10, ttl=5)
    history.append(pub("h:a", 1), now=0)
    history.append(pub("h:a", 2), now=4)
    assert [p.offset for p in history.read("h:a", None, "", now=6).publications] == [2]
    assert history.read("h:a", since=0, epoch="e1", now=6).reason == "too old"
    assert [p.offset for p in history.read("h:a", None, "", now=6, limit=1).publications] == [2]


def test_topics_without_history():
    history = store()
    read = history.read("nothing", since=0, epoch="e1", now=0)
    assert (read.recovered, read.reason) == (False, "no history for this topic")
    fresh = history.read("h:new", since=0, epoch="e1", now=0)
    assert (fresh.recovered, fresh.publications, fresh.offset) == (True, [], 0)


def test_rules_from_json():
    policy = HistoryPolicy.from_json('[{"pattern": "a:*", "size": 5, "ttl": 1}, {"pattern": "*", "size": 0}]')
    assert policy.rule_for("a:x") == HistoryRule("a:*", 5, 1.0) and policy.rule_for("b") is None
