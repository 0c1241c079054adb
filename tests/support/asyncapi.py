"""The protocol's published contract, docs/asyncapi.yaml, as validators for real frames.

Every frame the integration tests (WsClient) and page tests (Playwright) receive goes through
`check_server_frame`, so the document cannot drift from what the edge sends.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
BASE = "urn:pushsystem:asyncapi"
# The schema of a server frame, by its `type`; any other type is a publication.
SERVER_SCHEMAS = {"connected": "Connected", "ack": "Ack", "pong": "Pong", "error": "Error",
                  "recovery": "Recovery", "batch": "Batch", "close": "Close", "refresh_required": "RefreshRequired",
                  "unsubscribed": "Unsubscribed", "join": "JoinLeave", "leave": "JoinLeave",
                  "presence_summary": "PresenceSummary"}
CLIENT_SCHEMAS = {"ping": "Ping", "subscribe": "Subscribe", "unsubscribe": "Unsubscribe", "auth": "Auth",
                  "send_message": "SendMessage", "task_start": "TaskStart", "task_cancel": "TaskCancel",
                  "refresh": "Refresh", "publish": "Publish", "rpc": "Rpc", "presence": "PresenceRequest",
                  "presence_stats": "PresenceRequest"}


@cache
def document() -> dict[str, Any]:
    return yaml.safe_load(DOCUMENT.read_text())


@cache
def validator(schema_name: str) -> Draft7Validator:
    registry = Registry().with_resource(BASE, Resource(contents=document(), specification=DRAFT7))
    return Draft7Validator({"$ref": f"{BASE}#/components/schemas/{schema_name}"}, registry=registry)


def schema_errors(frame: Any, schema_name: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(frame)'}: {e.message}"
            for e in validator(schema_name).iter_errors(frame)]


def server_schema_of(frame: Any) -> str:
    kind = frame.get("type") if isinstance(frame, dict) else None
    return SERVER_SCHEMAS.get(kind, "Publication") if isinstance(kind, str) else "Publication"


def check_server_frame(frame: Any) -> None:
    """Raise AssertionError when `frame` (parsed JSON) is not a server frame the document describes."""
    name = server_schema_of(frame)
    errors = schema_errors(frame, name)
    if errors:
        raise AssertionError(f"frame does not match docs/asyncapi.yaml {name}: {errors}; frame: {frame!r}")


def check_client_frame(frame: Any) -> None:
    name = CLIENT_SCHEMAS[frame["type"]]
    errors = schema_errors(frame, name)
    if errors:
        raise AssertionError(f"frame does not match docs/asyncapi.yaml {name}: {errors}; frame: {frame!r}")
