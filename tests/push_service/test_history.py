import orjson
import pytest

from push_service.core.history import (
    TOPIC_OVERHEAD,
    HistoryPolicy,
    HistoryRule,
    HistoryStore,
    PageLimits,
    entry_bytes,
)
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


def test_idle_topics_are_swept_by_themselves():
    """5,000 topics with a 1 s age used to hold 5,000 messages until each was published to again."""
    history = HistoryStore(HistoryPolicy((HistoryRule("*", 100, 1),)), epoch="e1")
    for n in range(5000):
        history.append(pub(f"user:{n}", n), now=0)
    history.append(pub("user:busy", 1), now=599.5)
    assert (history.topics, len(history)) == (5001, 5001)
    assert history.sweep(now=600) == 5000
    assert (history.topics, len(history)) == (1, 1)
    assert history.bytes == TOPIC_OVERHEAD + len("user:busy") + entry_bytes(history.read("user:busy", None, "",
                                                                                          now=600).publications[0])
    assert history.sweep(now=601) == 1
    assert (history.topics, len(history), history.bytes) == (0, 0, 0)


def test_a_topic_with_messages_or_recent_is_not_forgotten():
    history = store(size=1, ttl=10)
    history.append(pub("h:a", 1), now=0)
    history.append(pub("h:a", 2), now=8)  # 1 went by count; 2 is young
    assert history.sweep(now=9) == 0
    assert history.sweep(now=17.9) == 0
    assert [p.offset for p in history.read("h:a", None, "", now=17.9).publications] == [2]
    assert history.sweep(now=18) == 1


def test_a_forgotten_topic_starts_a_new_epoch():
    history = store(size=10, ttl=5)
    first = history.append(pub("h:a", 1), now=0)
    history.sweep(now=5)
    assert history.read("h:a", since=1, epoch="e1", now=5).reason == "epoch changed"
    fresh = history.read("h:a", since=None, epoch="", now=5)
    again = history.append(pub("h:a", 2), now=6)
    assert (first.epoch, again.offset) == ("e1", 1) and again.epoch == fresh.epoch != "e1"
    assert history.append(pub("h:b", 3), now=6).epoch == again.epoch  # created after: the same new epoch
    assert [p.offset for p in history.read("h:a", since=0, epoch=again.epoch, now=6).publications] == [1]


def test_bytes_per_topic_bound_history():
    frame = len(pub("h:a", 1).at(1, "e1").frame)
    history = HistoryStore(HistoryPolicy((HistoryRule("h:*", 100, 60),), topic_bytes=2 * frame), epoch="e1")
    for n in range(1, 6):
        history.append(pub("h:a", n), now=0)
    assert [p.offset for p in history.read("h:a", None, "", now=0).publications] == [4, 5]
    assert history.read("h:a", since=2, epoch="e1", now=0).reason == "too old"


def test_bytes_in_total_the_least_recently_published_topic_gives_first():
    one = entry_bytes(pub("h:0", 1).at(1, "e1"))
    per_topic = TOPIC_OVERHEAD + len("h:0") + one  # a topic of one message
    history = HistoryStore(HistoryPolicy((HistoryRule("h:*", 100, 60),), total_bytes=3 * per_topic + one),
                           epoch="e1")
    for n in range(3):
        history.append(pub(f"h:{n}", n), now=0)
    history.append(pub("h:0", 1), now=1)  # h:0 is now the most recently published to
    assert (history.topics, len(history), history.bytes) == (3, 4, 3 * per_topic + one)
    history.append(pub("h:3", 3), now=2)  # over: h:1 (least recent) loses its message, then goes
    assert history.bytes <= 3 * per_topic + one
    assert [history.read(f"h:{n}", None, "", now=2).publications != [] for n in range(4)] == [True, False, True, True]
    assert history.read("h:1", since=1, epoch="e1", now=2).reason == "epoch changed"
    assert [p.offset for p in history.read("h:0", None, "", now=2).publications] == [1, 2]


def test_pages_by_count_and_bytes():
    history = store(size=100)
    for n in range(1, 8):
        history.append(pub("h:a", n), now=0)
    frame = len(history.read("h:a", None, "", now=0).publications[0].frame)
    page = PageLimits(max_count=3)
    assert [([p.offset for p in r.publications], r.truncated) for r in (
        history.read("h:a", since=0, epoch="e1", now=0, page=page),
        history.read("h:a", since=3, epoch="e1", now=0, page=page),
        history.read("h:a", since=6, epoch="e1", now=0, page=page),
    )] == [([1, 2, 3], True), ([4, 5, 6], True), ([7], False)]
    by_bytes = history.read("h:a", since=0, epoch="e1", now=0, page=PageLimits(max_bytes=2 * frame))
    assert ([p.offset for p in by_bytes.publications], by_bytes.truncated) == ([1, 2], True)
    with pytest.raises(ValueError, match="at least one message"):
        PageLimits(max_count=0)
