"""The HTTP transports' encodings and the emulation request (ws_edge/core/streams.py), without I/O."""

from __future__ import annotations

import orjson
import pytest

from ws_edge.core.session import url_positions
from ws_edge.core.streams import (
    MAX_EMULATION_FRAMES,
    EmulationError,
    PositionTracker,
    close_frame,
    ndjson_line,
    parse_emulation,
    sse_event,
)

SESSION = "~0123456789ab." + "0" * 32


def test_a_frame_is_one_line_or_one_event_whatever_line_breaks_its_data_holds():
    frame = b'{"type":"t","data":{\n"a":\r\n1}}'
    assert ndjson_line(frame) == b'{"type":"t","data":{ "a":  1}}\n'
    assert orjson.loads(ndjson_line(frame)) == {"type": "t", "data": {"a": 1}}
    assert sse_event(frame, None) == b'data: {"type":"t","data":{\ndata: "a":\ndata: 1}}\n\n'
    assert sse_event(b"{}", '{"a":{"offset":1,"epoch":"e"}}') == b'id: {"a":{"offset":1,"epoch":"e"}}\ndata: {}\n\n'


def test_the_event_id_is_every_position_seen_in_the_since_format():
    tracker = PositionTracker()
    assert tracker.note(b'{"type":"ack","id":"1","timestamp":1}') is False  # no position: not parsed
    assert tracker.note(b'{"type":"t","id":"x","timestamp":1,"topic":"a","offset":3,"epoch":"e"}') is True
    batch = (b'{"type":"batch","messages":[{"type":"t","id":"y","timestamp":1,"topic":"b","offset":7,"epoch":"f"},'
             b'{"type":"t","id":"z","timestamp":1,"topic":"a","offset":4,"epoch":"e"}]}')
    assert tracker.note(batch) is True
    assert tracker.note(b'{"type":"connected","id":"c","timestamp":1,"data":{"recovery":{'
                        b'"c":{"recovered":false,"offset":9,"epoch":"g","reason":"too old"}}}}') is True
    assert tracker.note(b'{"type":"t","id":"x","timestamp":1,"topic":"a","offset":4,"epoch":"e"}') is False
    since = url_positions(tracker.event_id())
    assert {t: (p.offset, p.epoch) for t, p in since.items()} == {"a": (4, "e"), "b": (7, "f"), "c": (9, "g")}


def test_close_frame_carries_the_code_and_a_reason_cut_to_a_close_frames_room():
    frame = orjson.loads(close_frame(4008, "slow consumer", 5))
    assert (frame["type"], frame["timestamp"], frame["data"]) == ("close", 5, {"code": 4008, "reason": "slow consumer"})
    assert len(orjson.loads(close_frame(4400, "x" * 500, 5))["data"]["reason"].encode()) == 123


def test_emulation_requests_are_checked_and_every_refusal_says_why():
    parsed = parse_emulation(orjson.dumps({"session": SESSION, "frames": [{"type": "ping", "id": "p"}, "{bad"]}), 10000)
    assert parsed.frames == ['{"type":"ping","id":"p"}', "{bad"]  # a raw frame is the session's to judge
    assert parsed.edge_mark == "~0123456789ab"
    cases = {
        b"{": (400, "body is not valid JSON"),
        b"[]": (400, 'body must be {"session": "...", "frames": [...]}'),
        orjson.dumps({"session": "abc", "frames": [{}]}): (400, "`session` must be the session id"),
        orjson.dumps({"session": "~0123456789ab.XYZ", "frames": [{}]}): (400, "`session` must be the session id"),
        orjson.dumps({"session": SESSION, "frames": []}): (400, "`frames` must be a non-empty list"),
        orjson.dumps({"session": SESSION, "frames": [1]}): (400, "`frames[0]` must be a JSON object"),
        orjson.dumps({"session": SESSION, "frames": [{}] * (MAX_EMULATION_FRAMES + 1)}): (413, "101 frames"),
        b"x" * 10001: (413, "body is 10001 bytes; the limit is 10000"),
    }
    for body, (status, start) in cases.items():
        with pytest.raises(EmulationError) as refused:
            parse_emulation(body, 10000)
        assert refused.value.status == status and refused.value.message.startswith(start), refused.value.message
