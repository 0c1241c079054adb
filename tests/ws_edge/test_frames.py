import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ws_edge.core.codes import ErrorCode
from ws_edge.core.frames import (
    ClientMessage,
    ProtocolError,
    batch_frame,
    error_frame,
    parse_client_frame,
    split_topics_param,
    websocket_text_frame,
)


def test_parses_the_guides_subscribe():
    message = parse_client_frame('{"type":"subscribe","id":"sub_1","data":{"topics":["task:progress"]}}', 1024)
    assert message == ClientMessage(type="subscribe", id="sub_1", data={"topics": ["task:progress"]}, topic=None)


@pytest.mark.parametrize(
    ("frame", "code", "message_id"),
    [
        ("{", ErrorCode.INVALID_JSON, None),
        (b"\xff", ErrorCode.INVALID_JSON, None),
        ("null", ErrorCode.INVALID_MESSAGE, None),
        ('{"type": ""}', ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "x", "id": 5, "data": 3}', ErrorCode.INVALID_MESSAGE, "5"),
        ('{"type": "x", "id": true}', ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "x", "topic": 1, "id": "a"}', ErrorCode.INVALID_MESSAGE, "a"),
        ('{"type": "' + "x" * 2000 + '"}', ErrorCode.MESSAGE_TOO_LARGE, None),
        ('{"type": "x", "id": 1' + "0" * 30 + "}", ErrorCode.INVALID_MESSAGE, None),
        ('{"type": "x", "id": 1e400}', ErrorCode.INVALID_JSON, None),
        ("[" * 300 + "]" * 300, ErrorCode.INVALID_MESSAGE, None),
    ],
)
def test_bad_frames_get_their_code(frame, code, message_id):
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame(frame, 1024)
    assert refused.value.code == code
    assert refused.value.message_id == message_id


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
).map(lambda v: orjson.dumps(v))))
def test_any_frame_parses_or_gets_a_protocol_error(frame):
    try:
        message = parse_client_frame(frame, 256)
    except ProtocolError as exc:
        assert exc.code in set(ErrorCode)
        orjson.loads(error_frame(exc.code, exc.message, exc.message_id, 1))
    else:
        assert isinstance(message.type, str) and message.type
        assert isinstance(message.data, dict)


def test_nesting_deeper_than_the_json_parser_allows_is_invalid_json():
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame('{"type": "x", "data": ' + "[" * 5000 + "]" * 5000 + "}", 65536)
    assert refused.value.code == ErrorCode.INVALID_JSON


@pytest.mark.parametrize(("length", "header"), [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
                                               (70_000, b"\x81\x7f" + (70_000).to_bytes(8, "big"))])
def test_websocket_text_frame_header(length, header):
    assert websocket_text_frame(b"a" * length) == header + b"a" * length


def test_batch_frame_splices_envelopes_and_keeps_a_lone_one_as_itself():
    assert batch_frame([b'{"a":1}']) == b'{"a":1}'
    assert orjson.loads(batch_frame([b'{"a":1}', b'{"b":2}'])) == {"type": "batch", "messages": [{"a": 1}, {"b": 2}]}


def test_topics_parameter():
    assert split_topics_param("task:progress, task:status,,task:progress") == ["task:progress", "task:status"]
    assert split_topics_param(None) == []


def test_regroup_fills_frames_up_to_the_cap_in_order():
    from ws_edge.core.frames import regroup

    assert regroup([[1], [2], [3, 4, 5]], 2) == [[1, 2], [3, 4], [5]]
    assert regroup([[1], [2], [3, 4, 5]], 100) == [[1, 2, 3, 4, 5]]
    assert regroup([[1] * 25], 10) == [[1] * 10, [1] * 10, [1] * 5]
    one = [[1, 2]]
    assert regroup(one, 10) is one  # the common case: nothing to do
