import orjson

from ws_edge.core.sendqueue import SendQueue


def test_frames_and_envelopes_come_out_in_order_envelopes_batched_by_ten():
    queue = SendQueue(coalesce_mark=1000, max_messages=1000)
    queue.push(b'{"type":"ack"}')
    for n in range(12):
        queue.push(orjson.dumps({"n": n}), envelope=True)
    assert queue.pop_frame() == b'{"type":"ack"}'
    first = orjson.loads(queue.pop_frame())
    assert first["type"] == "batch" and [m["n"] for m in first["messages"]] == list(range(10))
    assert orjson.loads(queue.pop_frame())["messages"] == [{"n": 10}, {"n": 11}]
    assert queue.pop_frame() is None and queue.bytes == 0


def test_past_the_mark_a_newer_message_replaces_the_queued_one_with_its_key():
    queue = SendQueue(coalesce_mark=2, max_messages=10)
    assert queue.push(b"a1", key="a", envelope=True)
    assert queue.push(b"a2", key="a", envelope=True)  # below the mark: both kept
    assert queue.push(b"a3", key="a", envelope=True)  # at the mark: replaces the latest queued `a`
    assert len(queue) == 2 and queue.coalesced == 1
    assert queue.pop_frame() == b'{"type":"batch","messages":[a1,a3]}'


def test_bounds_in_messages_and_bytes():
    by_count = SendQueue(coalesce_mark=100, max_messages=3)
    assert all(by_count.push(b"x") for _ in range(3))
    assert not by_count.push(b"x")
    by_bytes = SendQueue(coalesce_mark=100, max_messages=100, max_bytes=10)
    assert by_bytes.push(b"12345")
    assert not by_bytes.push(b"123456")


def test_push_first_goes_before_everything():
    queue = SendQueue()
    queue.push(b"later")
    queue.push_first(b"first")
    assert [queue.pop_frame(), queue.pop_frame()] == [b"first", b"later"]
