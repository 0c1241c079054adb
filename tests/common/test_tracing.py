"""common/tracing.py: W3C trace context in and out, the JSON-lines exporter's records, and tracing off
keeping out of the hot paths (the edge's fan-out, the push service's routing) entirely."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from push.v1 import push_service_pb2 as pb

from common import tracing
from push_service.core.publication import Publication
from push_service.hub import Hub
from tests.support.deliveries import D
from ws_edge.core.routing import DeliveryRouter
from ws_edge.delivery import DeliveryPump

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Tracing on for one test (this process's global state, restored after), spans to a file at once."""
    file = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracing.JsonLinesExporter(file, "test")))  # type: ignore[arg-type]
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "ENABLED", True)
    yield file
    provider.shutdown()


def records(file: Path) -> list[dict]:
    return [json.loads(line) for line in file.read_text().splitlines()]


def test_traceparents_say_whether_their_trace_is_sampled():
    assert tracing.sampled(SAMPLED) and not tracing.sampled(NOT_SAMPLED)
    assert not tracing.sampled("") and not tracing.sampled("garbage")
    # a publisher's text of the right length that is not one (the flags were parsed as hex and raised)
    assert not tracing.sampled(SAMPLED[:53] + "zz") and not tracing.sampled("x" * 55)
    assert tracing.from_metadata([("authorization", "Bearer x"), ("traceparent", SAMPLED)]) == SAMPLED
    assert tracing.from_metadata([("x-bin", b"\x00")]) == ""


def test_a_span_is_the_child_of_the_traceparent_it_is_given_and_gives_its_own(traced: Path):
    with tracing.start_span("child", parent=SAMPLED, attributes={"a": 1}) as span:
        own = tracing.traceparent(span)
        assert tracing.metadata(span) == (("traceparent", own),)
    assert own.startswith("00-0af7651916cd43dd8448eb211c80319c-") and own.endswith("-01") and own != SAMPLED
    (record,) = records(traced)
    assert record == {**record, "service": "test", "name": "child", "kind": "INTERNAL",
                      "trace_id": "0af7651916cd43dd8448eb211c80319c", "parent_span_id": "b7ad6b7169203331",
                      "span_id": own[36:52], "status": "UNSET", "attributes": {"a": 1}, "links": []}
    assert record["start_ns"] <= record["end_ns"]


def test_without_tracing_nothing_is_sampled_and_no_span_carries_context():
    assert tracing.ENABLED is False  # nothing in the test process turned it on
    assert not tracing.sampled_root() and not tracing.current_sampled()
    assert tracing.traceparent(tracing.start_span("nothing")) == ""


class Socket:
    def __init__(self) -> None:
        self.wires: list[bytes] = []

    def direct(self, wire: bytes) -> bool:  # takes the frame at once
        self.wires.append(wire)
        return True


def pump_with_a_socket() -> tuple[DeliveryPump, Socket]:
    router, socket = DeliveryRouter(), Socket()
    router.topics.add("t", socket)
    return DeliveryPump(router, read_history=None, conflated=[]), socket  # type: ignore[arg-type]


def test_tracing_off_the_fan_out_never_looks_at_trace_context(monkeypatch: pytest.MonkeyPatch):
    def untouchable(*args: object, **kwargs: object) -> None:
        raise AssertionError("tracing code ran with tracing off")

    monkeypatch.setattr("ws_edge.delivery._traced", untouchable)
    monkeypatch.setattr(tracing, "start_span", untouchable)
    pump, socket = pump_with_a_socket()
    traced = pb.Delivery(topic="t", frame=b'{"n":1}', traceparent=SAMPLED)
    pump.fan_out([[traced, D(topic="t", frame=b'{"n":2}')]])
    assert len(socket.wires) == 1


def test_a_round_with_sampled_messages_is_one_span_linked_to_the_others(traced: Path):
    pump, socket = pump_with_a_socket()
    other = SAMPLED.replace("b7ad6b7169203331", "00f067aa0ba902b7")
    pump.fan_out([[pb.Delivery(topic="t", frame=b'{"n":1}', traceparent=SAMPLED)],
                  [D(topic="t", frame=b'{"n":2}'), pb.Delivery(topic="t", frame=b'{"n":3}', traceparent=other)]])
    assert len(socket.wires) == 1  # one write for the round
    (span,) = records(traced)
    assert (span["name"], span["parent_span_id"]) == ("edge.deliver", "b7ad6b7169203331")
    assert span["links"] == [{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "00f067aa0ba902b7"}]
    assert span["attributes"] == {"push.messages": 3, "push.traced_messages": 2, "push.deliveries": 3}


class Session:
    def __init__(self) -> None:
        self.got: list[Publication] = []
        self.enqueue = self.got.append


def test_the_push_services_fan_out_passes_its_own_context_on_only_when_tracing(traced: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    hub, session = Hub(broker=None), Session()  # type: ignore[arg-type]
    hub._interest.add("t:news", session)  # type: ignore[arg-type]
    publication = Publication(topic="news", client_id="", id="1", timestamp_ms=1, frame=b"{}", traceparent=SAMPLED)
    hub._route(publication)
    (span,) = records(traced)
    assert (span["name"], span["parent_span_id"], span["attributes"]["push.edge_streams"]) == (
        "push.fan_out", "b7ad6b7169203331", 1)
    assert session.got[0].traceparent == f"00-{span['trace_id']}-{span['span_id']}-01"
    monkeypatch.setattr(tracing, "ENABLED", False)
    hub._route(publication)
    assert session.got[1] is publication and len(records(traced)) == 1  # off: handed on as it came


def test_a_publications_trace_context_crosses_redis_in_its_header_and_only_when_set():
    from push_service.broker.redis import decode_payload, encode_header

    traced = Publication(topic="news", client_id="", id="1", timestamp_ms=1, frame=b"{}", traceparent=SAMPLED)
    assert decode_payload(encode_header(traced) + b"\n" + traced.frame) == traced
    untraced = Publication(topic="news", client_id="", id="1", timestamp_ms=1, frame=b"{}")
    assert b"tp" not in encode_header(untraced)  # what older replicas read, unchanged
    assert decode_payload(encode_header(untraced) + b"\n" + untraced.frame) == untraced


@pytest.mark.parametrize("prefix", ["PUSH_", "EDGE_", "TASK_"])
def test_a_file_exporter_without_a_file_stops_the_service_with_the_variable_to_set(prefix: str):
    from pydantic import ValidationError

    from push_service.config import PushSettings
    from task_service.config import TaskSettings
    from ws_edge.config import EdgeSettings

    settings = {"PUSH_": PushSettings, "EDGE_": EdgeSettings, "TASK_": TaskSettings}[prefix]
    with pytest.raises(ValidationError, match=f"{prefix}TRACING=file needs {prefix}TRACE_FILE"):
        settings(tracing="file")
    with pytest.raises(ValidationError, match="trace_sample_ratio"):
        settings(trace_sample_ratio=1.5)
    with pytest.raises(ValidationError, match=f"{prefix}TRACE_FILE: No such file or directory: /nonexistent/"):
        settings(tracing="file", trace_file="/nonexistent/spans.jsonl")
    assert settings().tracing == "off"  # the default


def test_pushctl_refuses_a_trace_file_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from pushclient.cli import main

    missing = tmp_path / "no-such-directory" / "spans.jsonl"
    with pytest.raises(SystemExit) as exited:
        main(["--trace-file", str(missing), "publish", "--topic", "t", "--type", "x"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"pushctl: error: --trace-file: No such file or directory: {missing}\n"
    assert tracing.ENABLED is False
