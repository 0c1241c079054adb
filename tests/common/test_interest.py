from common.backoff import Backoff
from common.interest import InterestTable
from common.topics import topic_error


def test_first_and_last_interest_are_reported():
    table: InterestTable[str, str] = InterestTable()
    assert table.add("t", "a") is True
    assert table.add("t", "b") is False
    assert table.add("t", "a") is False
    assert table.subscribers("t") == {"a", "b"}
    assert table.remove("t", "a") is False
    assert table.remove("t", "a") is False
    assert table.remove("t", "b") is True
    assert "t" not in table and len(table) == 0


def test_removing_a_subscriber_returns_the_emptied_keys():
    table: InterestTable[str, str] = InterestTable()
    table.add("x", "a")
    table.add("y", "a")
    table.add("y", "b")
    assert sorted(table.remove_subscriber("a")) == ["x"]
    assert table.keys_of("a") == frozenset()
    assert list(table.keys()) == ["y"]


def test_topic_grammar():
    assert topic_error("task:progress") is None
    assert topic_error("user:alice@example.com") is None
    assert topic_error("a b") is not None
    assert topic_error("") is not None
    assert topic_error("x" * 129) is not None
    assert topic_error(5) == "a topic must be a string, not int"


def test_backoff_grows_with_jitter_and_is_capped():
    import random

    backoff = Backoff(initial=0.1, maximum=1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays[0] == 0.1
    assert all(0.1 <= d <= 1.0 for d in delays)
    assert max(delays[5:]) > 0.2
    backoff.reset()
    assert backoff.next_delay() == 0.1
