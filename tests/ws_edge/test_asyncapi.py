"""docs/asyncapi.yaml itself: well formed, every reference resolves, and it describes what the edge's
core builds and accepts (the integration and page tests check every real frame they receive)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from jsonschema import Draft7Validator

from tests.support.asyncapi import (
    CLIENT_SCHEMAS,
    SERVER_SCHEMAS,
    check_client_frame,
    check_server_frame,
    document,
)
from ws_edge.core.codes import ErrorCode
from ws_edge.core.frames import batch_frame, error_frame, parse_client_frame, server_frame


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_document_is_asyncapi_3_with_valid_schemas_and_resolvable_references():
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    for schema in doc["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)  # raises SchemaError naming what is wrong
    for ref in refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
            node = node[part]
    messages = doc["components"]["messages"]
    # Every frame type the tests tell apart is a documented message of both operations' channel.
    schemas = {m["payload"]["$ref"].rsplit("/", 1)[1] for m in messages.values()}
    assert set(SERVER_SCHEMAS.values()) | set(CLIENT_SCHEMAS.values()) | {"Publication"} <= schemas


def test_frames_the_edge_core_builds_validate():
    check_server_frame(orjson.loads(server_frame("connected", None, 1, {"client_id": "c", "topics": ["a"],
                                                                       "user": None})))
    check_server_frame(orjson.loads(server_frame("pong", "p1", 1)))
    check_server_frame(orjson.loads(server_frame("ack", "s", 1, {"type": "subscribe", "topics": ["a"], "recovery": {
        "a": {"recovered": False, "offset": 3, "epoch": "e", "reason": "epoch changed"}}})))
    check_server_frame(orjson.loads(server_frame("recovery", None, 1, {
        "topic": "a", "recovered": False, "offset": 0, "epoch": "", "reason": "history unavailable"})))
    for code in ErrorCode:
        check_server_frame(orjson.loads(error_frame(code, "why", None, 1)))
    envelope = b'{"type":"t","id":"1","timestamp":5,"data":{"x":1},"topic":"a","offset":1,"epoch":"e"}'
    check_server_frame(orjson.loads(batch_frame([envelope, envelope])))


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ({"type": "pong", "id": "p", "timestamp": 1, "extra": 1}, "Additional properties"),
        ({"type": "error", "id": "e", "timestamp": 1, "error": {"code": "NOPE", "message": ""}}, "is not one of"),
        ({"type": "t", "id": "1", "timestamp": 1, "offset": 3}, "'epoch' is a dependency"),
        ({"type": "batch", "messages": [{"type": "t", "id": "1", "timestamp": 1}]}, "is too short"),
        ({"type": "ack", "id": "a", "timestamp": 1, "data": {"type": "subscribe"}}, "is not valid under any"),
    ],
)
def test_frames_outside_the_document_are_refused(frame: dict, fragment: str):
    with pytest.raises(AssertionError, match=fragment):
        check_server_frame(frame)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ping", "id": "p1", "timestamp": 1},
        {"type": "subscribe", "id": "s", "data": {"topics": ["a"], "since": {"a": {"offset": 2, "epoch": "e"}}}},
        {"type": "unsubscribe", "id": "u", "data": {"topics": ["a"]}},
        {"type": "auth", "data": {"token": "x.y.z"}},
        {"type": "send_message", "id": "m", "data": {"recipient": "dave", "content": "hi"}},
        {"type": "task_start", "id": "t", "data": {"params": {"symbols": ["A"], "interval": 0.5}}},
        {"type": "task_cancel", "id": "c", "data": {"task_id": "abc"}},
        {"type": "subscribe", "id": "s2", "data": {"topics": ["private:a"], "tokens": {"private:a": "x.y.z"},
                                                   "data": {"password": 1}}},
        {"type": "refresh", "id": "r", "data": {"token": "x.y.z"}},
        {"type": "refresh", "id": "r2", "data": {"token": "x.y.z", "topic": "private:a"}},
        {"type": "publish", "id": "p", "data": {"topic": "chat:1", "data": {"text": "hi"}, "type": "said"}},
        {"type": "rpc", "id": "q", "data": {"method": "echo", "data": [1]}},
    ],
)
def test_documented_client_frames_are_accepted_by_the_edge_parser(frame: dict):
    check_client_frame(frame)
    parsed = parse_client_frame(orjson.dumps(frame), 65536)
    assert parsed.type == frame["type"]


def test_the_token_and_hook_frames_validate():
    for frame in (
        server_frame("refresh_required", None, 1, {"expires_at": 100}),
        server_frame("refresh_required", None, 1, {"expires_at": 100, "topic": "private:a"}),
        server_frame("unsubscribed", None, 1, {"topic": "private:a", "code": "TOKEN_EXPIRED", "reason": "r"}),
        server_frame("ack", "r", 1, {"type": "refresh", "expires_at": 100}),
        server_frame("ack", "p", 1, {"type": "publish", "topic": "chat:1", "message_id": "m1"}),
        server_frame("ack", "q", 1, {"type": "rpc", "data": None}),
        server_frame("ack", "w", 1, {"type": "whatever", "data": {"x": 1}}),
        server_frame("connected", None, 1, {"client_id": "c", "topics": [], "user": "u", "expires_at": 100}),
    ):
        check_server_frame(orjson.loads(frame))
    with pytest.raises(AssertionError, match="is not valid under any"):  # an ack of publish without its id
        check_server_frame(orjson.loads(server_frame("ack", "p", 1, {"type": "publish", "topic": "chat:1"})))
    with pytest.raises(AssertionError):
        check_server_frame(orjson.loads(server_frame("refresh_required", None, 1, {"topic": "a"})))


def test_the_http_streams_frames_validate():
    from ws_edge.core.streams import close_frame

    check_server_frame(orjson.loads(close_frame(4008, "slow consumer", 1)))
    check_server_frame(orjson.loads(server_frame("connected", None, 1, {
        "client_id": "c", "topics": [], "user": None, "session": "~0123456789ab." + "f" * 32})))
    with pytest.raises(AssertionError):
        check_server_frame(orjson.loads(server_frame("close", None, 1, {"code": 4999, "reason": ""})))
