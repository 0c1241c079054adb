"""OpenTelemetry traces across processes: `pushctl publish` → push service → edge → the socket write,
each process exporting its spans as JSON lines (common/tracing.py's file exporter), one trace with the
right parents across the three; the edge's connect and subscribe spans; tracing off exports nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import pushctl
from tests.support.processes import System
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout
from tests.support.wsclient import WsClient

TOPIC = "traced:news"


@pytest.fixture(scope="module", params=["memory", "redis"])
def traced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The system with tracing on in the push service and the edge, on either engine (with Redis the
    trace context crosses it in the publication's header)."""
    workdir = tmp_path_factory.mktemp("tracing")
    with contextlib.ExitStack() as started:
        redis = started.enter_context(RedisServer(workdir)) if request.param == "redis" else None
        system = System(workdir,
                        push_env={"PUSH_TRACING": "file", "PUSH_TRACE_FILE": str(workdir / "push.jsonl"),
                                  **({"PUSH_BROKER_URL": redis.url} if redis is not None else {})},
                        edge_env={"EDGE_TRACING": "file", "EDGE_TRACE_FILE": str(workdir / "edge.jsonl")})
        started.callback(system.stop)
        asyncio.run(system.start())
        yield system


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def spans_named(path: Path, *names: str, trace_id: str | None = None, limit: float = 15.0
                      ) -> dict[str, list[dict[str, Any]]]:
    """Once every name has a span in `path` (of `trace_id`, when given; the services export every
    second): the spans by name."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(limit)
    while True:
        found: dict[str, list[dict[str, Any]]] = {}
        for span in spans(path):
            if trace_id is None or span["trace_id"] == trace_id:
                found.setdefault(span["name"], []).append(span)
        if all(name in found for name in names):
            return found
        assert loop.time() < deadline, f"no {set(names) - set(found)} in {path}: {sorted(found)}"
        await asyncio.sleep(0.2)


async def test_one_trace_from_pushctl_publish_to_the_edges_socket_write(traced: System):
    workdir = traced.workdir
    client = await WsClient.connect(traced.ws_url, topics=TOPIC)
    try:
        published = await asyncio.to_thread(
            pushctl, traced, "--trace-file", str(workdir / "pushctl.jsonl"), "publish", "--topic", TOPIC,
            "--type", "news", "--data", '{"n": 1}', "--id", "traced-1")
        assert (published.returncode, published.stdout, published.stderr) == (0, "traced-1\n", "")
        (message,) = await client.messages(1)
        assert message["id"] == "traced-1" and message["data"] == {"n": 1}
    finally:
        await client.close()

    (publisher,) = spans(workdir / "pushctl.jsonl")  # flushed when pushctl exited
    trace_id = publisher["trace_id"]
    push = await spans_named(workdir / "push.jsonl", "push.publish", "push.validate", "push.broker.publish",
                             "push.fan_out", trace_id=trace_id)
    edge = await spans_named(workdir / "edge.jsonl", "edge.deliver", trace_id=trace_id)
    assert (publisher["service"], publisher["name"], publisher["kind"], publisher["parent_span_id"]) == (
        "pushctl", "pushclient.publish", "PRODUCER", None)
    assert publisher["attributes"] == {"messaging.destination.name": TOPIC, "messaging.message.type": "news"}

    def one(found: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
        (span,) = [s for s in found[name] if s["trace_id"] == trace_id]
        return span

    publish = one(push, "push.publish")
    assert (publish["service"], publish["kind"], publish["parent_span_id"]) == (
        "push_service", "SERVER", publisher["span_id"])  # across processes: through the gRPC metadata
    assert publish["attributes"]["rpc.method"] == "Publish" and publish["status"] == "UNSET"
    for step in ("push.validate", "push.broker.publish"):
        assert one(push, step)["parent_span_id"] == publish["span_id"], step
    fan_out = one(push, "push.fan_out")  # through the broker, in the publication
    assert fan_out["parent_span_id"] == publish["span_id"] and fan_out["attributes"]["push.edge_streams"] == 1
    deliver = one(edge, "edge.deliver")  # through the edge stream, in the Delivery
    assert (deliver["service"], deliver["kind"], deliver["parent_span_id"]) == ("ws_edge", "CONSUMER",
                                                                                 fan_out["span_id"])
    assert deliver["attributes"] == {"push.messages": 1, "push.traced_messages": 1, "push.deliveries": 1}
    assert deliver["links"] == []
    # In time order: published, accepted, fanned out, written.
    assert publisher["start_ns"] <= publish["start_ns"] <= fan_out["start_ns"] <= deliver["start_ns"]
    assert deliver["end_ns"] <= publisher["end_ns"] + 5_000_000_000


async def test_an_untraced_publish_makes_no_spans_downstream(traced: System):
    client = await WsClient.connect(traced.ws_url, topics=TOPIC)
    try:
        # Spans that ended before this client's connect (the readiness probe's, when this test is the first to
        # use the system) are exported before it: counted from there, none of them is taken for the publish's.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(15)
        while not any(s["name"] == "edge.connect" and s["attributes"].get("push.client_id") == client.client_id
                      for s in spans(traced.workdir / "edge.jsonl")):
            assert loop.time() < deadline, "no edge.connect span of the client"
            await asyncio.sleep(0.2)
        before = len(spans(traced.workdir / "push.jsonl")), len(spans(traced.workdir / "edge.jsonl"))
        published = await asyncio.to_thread(pushctl, traced, "publish", "--topic", TOPIC, "--type", "news",
                                            "--id", "untraced-1")
        assert published.returncode == 0, published.stderr
        (message,) = await client.messages(1)
        assert message["id"] == "untraced-1"
        await asyncio.sleep(2.5)  # two export intervals
        edge_spans = spans(traced.workdir / "edge.jsonl")[before[1]:]
        assert len(spans(traced.workdir / "push.jsonl")) == before[0]
        assert {s["name"] for s in edge_spans} <= {"edge.connect", "edge.subscribe"}  # this client's own
    finally:
        await client.close()


async def test_the_edge_traces_connect_and_subscribe(traced: System):
    client = await WsClient.connect(traced.ws_url, topics="traced:a")
    try:
        answer = await client.request({"type": "subscribe", "id": "s1", "data": {"topics": ["traced:b"]}})
        assert answer["type"] == "ack", answer
    finally:
        await client.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(15)
    while not (connects := [s for s in spans(traced.workdir / "edge.jsonl") if s["name"] == "edge.connect"
                            and s["attributes"].get("push.client_id") == client.client_id]):
        assert loop.time() < deadline, "no edge.connect span of the client"
        await asyncio.sleep(0.2)
    (connect,) = connects
    assert connect["parent_span_id"] is None and connect["attributes"]["push.topics"] == 1
    while len(subscribes := {tuple(s["attributes"]["push.topics"]): s for s in spans(traced.workdir / "edge.jsonl")
                             if s["name"] == "edge.subscribe"
                             and s["attributes"]["push.topics"] in (["traced:a"], ["traced:b"])}) < 2:
        assert loop.time() < deadline, f"edge.subscribe spans: {subscribes}"
        await asyncio.sleep(0.2)
    at_connect, later = subscribes[("traced:a",)], subscribes[("traced:b",)]
    assert (at_connect["trace_id"], at_connect["parent_span_id"]) == (connect["trace_id"], connect["span_id"])
    assert later["parent_span_id"] is None and later["trace_id"] != connect["trace_id"]  # a trace of its own


async def test_a_streamed_message_carries_its_own_context_to_the_edge(traced: System, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """The stream publisher (as the task service uses it), tracing in this test's process: each message's
    context travels in `OutgoingMessage.traceparent`, not in the stream's metadata."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from common import tracing
    from pushclient import PushClient
    from pushclient.client import outgoing

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(
        tracing.JsonLinesExporter(tmp_path / "publisher.jsonl", "test")))  # type: ignore[arg-type]
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "ENABLED", True)
    client = await WsClient.connect(traced.ws_url, topics=TOPIC)
    try:
        async with PushClient(traced.push_address) as push:
            publisher = push.stream_publisher()
            publisher.start()
            publisher.submit(outgoing(TOPIC, "news", {"n": 2}, id="streamed-1"))
            await asyncio.wait_for(publisher.flush(), timeout(10))
            await publisher.close()
        (message,) = await client.messages(1)
        assert message["id"] == "streamed-1"
    finally:
        await client.close()
        provider.shutdown()
    (published,) = spans(tmp_path / "publisher.jsonl")
    trace_id = published["trace_id"]
    push = await spans_named(traced.workdir / "push.jsonl", "push.publish", "push.fan_out", trace_id=trace_id)
    edge = await spans_named(traced.workdir / "edge.jsonl", "edge.deliver", trace_id=trace_id)
    (publish,), (fan_out,), (deliver,) = push["push.publish"], push["push.fan_out"], edge["edge.deliver"]
    assert publish["parent_span_id"] == published["span_id"] and publish["attributes"]["rpc.method"] == "PublishStream"
    assert fan_out["parent_span_id"] == publish["span_id"] and deliver["parent_span_id"] == fan_out["span_id"]
