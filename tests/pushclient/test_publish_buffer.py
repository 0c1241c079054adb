"""`PublishBuffer`, the stream publisher's I/O-free buffer: newer messages supersede unsent ones of
their (topic, conflation key), the bounds (count and bytes) drop messages with a key first, and what is
sent keeps submission order."""

from __future__ import annotations

from pushclient.client import PublishBuffer, outgoing


class Ids:
    """Adds messages with increasing sequences; `ids()` is what the buffer holds, oldest first."""

    def __init__(self, buffer: PublishBuffer) -> None:
        self.buffer = buffer
        self.sequence = 0

    def add(self, id_: str, topic: str = "t", key: str = "", pad: int = 0, supersede: bool = False) -> tuple:
        self.sequence += 1
        added = self.buffer.add(self.sequence, outgoing(topic, "m", {"p": "x" * pad}, id=id_, conflation_key=key),
                                supersede=supersede)
        return (added.superseded.message.id if added.superseded else None), [d.message.id for d in added.dropped]

    def ids(self) -> list[str]:
        return [m.id for m in self.buffer.messages()]


def test_past_the_mark_a_newer_message_replaces_the_unsent_one_of_its_key_at_the_end():
    # The newer one goes where it was submitted (the end), not where the older one was: the list
    # "l2" must not overtake the status "s" submitted before it.
    ids = Ids(PublishBuffer(conflate_after=0))
    ids.add("p1", "task:progress", key="a")
    ids.add("l1", "task:list", key="list")
    ids.add("s", "task:status")
    assert ids.add("p2", "task:progress", key="a") == ("p1", [])
    assert ids.add("l2", "task:list", key="list") == ("l1", [])
    ids.add("q1", "task:progress", key="b")
    assert ids.ids() == ["s", "p2", "l2", "q1"]
    # Another topic with the same key, or no key at all, supersedes nothing.
    assert ids.add("x", "other", key="a") == (None, [])
    assert ids.add("s2", "task:status") == (None, [])
    assert ids.ids() == ["s", "p2", "l2", "q1", "x", "s2"]


def test_below_the_mark_every_message_is_kept():
    ids = Ids(PublishBuffer(conflate_after=3))
    for n in range(3):
        ids.add(f"p{n}", key="a")
    assert ids.ids() == ["p0", "p1", "p2"]  # 0, 1, 2 held when each came: under the mark
    assert ids.add("p3", key="a") == ("p2", [])  # 3 held: the newest unsent of the key goes
    assert ids.ids() == ["p0", "p1", "p3"]


def test_a_message_on_the_wire_is_not_replaced_but_counts_towards_the_mark():
    buffer = PublishBuffer(conflate_after=2)
    ids = Ids(buffer)
    ids.add("p1", key="a")
    ids.add("q1", key="b")
    assert [m.message.id for m in buffer.take(200, 1 << 20)] == ["p1", "q1"]
    assert ids.add("p2", key="a") == (None, [])  # p1 is on the wire
    assert ids.add("p3", key="a") == ("p2", [])  # two held before it, though on the wire: past the mark
    assert ids.ids() == ["p1", "q1", "p3"]
    # The stream is lost: p1 is unsent again, first; a newer message replaces the newest of its key, p3.
    buffer.unsend_all()
    assert ids.add("p4", key="a") == ("p3", [])
    assert [m.message.id for m in buffer.take(200, 1 << 20)] == ["p1", "q1", "p4"]


def test_supersede_replaces_whatever_the_backlog():
    ids = Ids(PublishBuffer())  # conflate_after None: only when full
    ids.add("l1", "task:list", key="list")
    ids.add("l2", "task:list", key="list")
    assert ids.add("l3", "task:list", key="list", supersede=True) == ("l2", [])
    assert ids.ids() == ["l1", "l3"]


def test_when_full_the_superseded_then_the_oldest_keyed_then_the_oldest_go():
    ids = Ids(PublishBuffer(max_messages=4))
    ids.add("s1")
    ids.add("p1", key="a")
    ids.add("s2")
    ids.add("q1", key="b")
    assert ids.add("p2", key="a") == ("p1", [])  # full: the message it supersedes makes room
    assert ids.ids() == ["s1", "s2", "q1", "p2"]
    assert ids.add("s3") == (None, ["q1"])  # the oldest with a key, not s1
    assert ids.add("s4") == (None, ["p2"])
    assert ids.ids() == ["s1", "s2", "s3", "s4"]
    assert ids.add("p3", key="a") == (None, ["p3"])  # the only one with a key is the new one
    assert ids.add("s5") == (None, ["s1"])  # nothing with a key left: the oldest, a status
    assert ids.ids() == ["s2", "s3", "s4", "s5"]


def test_the_oldest_goes_first_even_on_the_wire_and_sequences_settle_what_remains():
    buffer = PublishBuffer(max_messages=3)
    ids = Ids(buffer)
    for id_ in ("s1", "s2", "s3"):
        ids.add(id_)
    sent = [m.sequence for m in buffer.take(2, 1 << 20)]
    assert sent == [1, 2]
    assert ids.add("s4") == (None, ["s1"])  # on the wire, the most likely to be published already
    assert buffer.settle(1) is None  # its answer finds nothing to settle
    assert buffer.settle(2).message.id == "s2"
    assert ids.ids() == ["s3", "s4"] and 2 not in buffer and 3 in buffer


def test_the_byte_bound_drops_keyed_messages_first_and_keeps_a_lone_large_message():
    buffer = PublishBuffer(max_messages=100, max_bytes=3000)
    ids = Ids(buffer)
    ids.add("s1", pad=100)
    ids.add("l1", "task:list", key="list", pad=1000)
    ids.add("p1", key="a", pad=1000)
    assert buffer.bytes <= 3000 and len(buffer) == 3
    assert ids.add("s2", pad=1000) == (None, ["l1"])
    assert ids.ids() == ["s1", "p1", "s2"] and buffer.bytes <= 3000
    # Full by bytes: the new list replaces nothing (no unsent list) and itself goes only after p1.
    assert ids.add("l2", "task:list", key="list", pad=1000) == (None, ["p1"])
    assert ids.ids() == ["s1", "s2", "l2"]
    assert ids.add("big", pad=5000) == (None, ["l2", "s1", "s2"])
    assert ids.ids() == ["big"] and buffer.bytes > 3000
    assert buffer.bytes == sum(m.ByteSize() for m in buffer.messages())
