"""The gRPC API: statuses with clear messages, per-message answers on the stream, health, reflection."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from push.v1 import push_service_pb2 as pb

from pushclient import PublishError, PushClient
from tests.support.processes import System

pytestmark = pytest.mark.portable


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"topic": "bad topic", "type_": "t"}, "invalid topic"),
        ({"topic": "", "type_": "t"}, "must not be empty"),
        ({"topic": "x" * 129, "type_": "t"}, "the limit is 128"),
        ({"topic": "ok", "type_": ""}, "type must not be empty"),
        ({"topic": "ok", "type_": "t", "data": b"{not json"}, "not valid UTF-8 JSON"),
        ({"topic": "ok", "type_": "t", "data": b'"\xff"'}, "not valid UTF-8 JSON"),
        ({"topic": "ok", "type_": "t", "data": b'"' + b"x" * 70_000 + b'"'}, "the limit is 65536"),
        ({"topic": "ok", "type_": "t", "retain": True, "client_id": "c"}, "cannot be retained"),
    ],
)
async def test_publish_rejects_bad_messages_with_invalid_argument(push: PushClient, kwargs, fragment):
    with pytest.raises(PublishError) as refused:
        await push.publish(kwargs.pop("topic"), kwargs.pop("type_"), kwargs.pop("data", None), **kwargs)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in refused.value.message


async def test_publish_stream_answers_every_message_of_every_request_in_order(system: System, push: PushClient):
    async def requests():
        yield pb.PublishStreamRequest(sequence=1, messages=[pb.OutgoingMessage(topic="s", type="t", data=b"1")])
        yield pb.PublishStreamRequest(sequence=7, messages=[
            pb.OutgoingMessage(topic="bad topic", type="t"),
            pb.OutgoingMessage(topic="s", type="t", id="three"),
        ])

    answers = [r async for r in push.stub.PublishStream(requests())]
    assert [a.sequence for a in answers] == [1, 7]
    assert [len(a.results) for a in answers] == [1, 2]
    first, (rejected, third) = answers[0].results[0], answers[1].results
    assert first.id and not first.error_code
    assert rejected.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and not rejected.id
    assert "invalid topic" in rejected.error_message
    assert third.id == "three" and third.timestamp_ms > 0


async def test_a_burst_of_thousands_of_unary_publishes_is_answered_in_full(push: PushClient):
    """gRPC's server queues 1,000 calls not yet taken up by default and cancels the rest (CANCELLED,
    no message): the push service queues more, and PushClient keeps at most 256 on the wire."""
    burst = 4000
    message = pb.OutgoingMessage(topic="burst", type="t", data=b"1")
    raw = await asyncio.gather(*(push.stub.Publish(pb.PublishRequest(message=message), timeout=60)
                                 for _ in range(burst)), return_exceptions=True)
    failed = [r for r in raw if isinstance(r, BaseException)]
    assert failed == [] and len({r.id for r in raw}) == burst
    answers = await asyncio.gather(*(push.publish("burst", "t", {"n": n}) for n in range(burst)))
    assert len({a.id for a in answers}) == burst


@pytest.mark.parametrize("which", ["push", "tasks"])
async def test_health_and_reflection_on_every_grpc_server(system: System, which: str):
    address, service = {
        "push": (system.push_address, "push.v1.PushService"),
        "tasks": (system.task_address, "task.v1.TaskService"),
    }[which]
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", service):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        # Reflection needs the bearer token where one is required (health does not).
        metadata = (("authorization", f"Bearer {system.grpc_token}"),) if system.grpc_token else None
        replies = [r async for r in reflection.ServerReflectionInfo(ask(), metadata=metadata)]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {service, "grpc.health.v1.Health"} <= names


async def test_the_same_idempotency_key_is_delivered_once(system: System, push: PushClient, ws):
    client = await ws(topics="once")
    first = await push.publish("once", "t", {"n": 1}, idempotency_key="order-42")
    repeat = await push.publish("once", "t", {"n": 1}, idempotency_key="order-42")
    assert (repeat.id, repeat.timestamp_ms) == (first.id, first.timestamp_ms)

    async def requests():
        yield pb.PublishStreamRequest(sequence=1, messages=[
            pb.OutgoingMessage(topic="once", type="t", idempotency_key="order-42"),
            pb.OutgoingMessage(topic="once", type="t", id="s-1", idempotency_key="order-43"),
            pb.OutgoingMessage(topic="once", type="t", id="s-1-again", idempotency_key="order-43"),
        ])

    [answer] = [r async for r in push.stub.PublishStream(requests())]
    assert [r.id for r in answer.results] == [first.id, "s-1", "s-1"]
    delivered = await client.messages(2)
    assert [m["id"] for m in delivered] == [first.id, "s-1"]
    await client.expect_silence(0.5)


async def test_history_rpc(system: System, push: PushClient):
    replies = [await push.publish("hist:rpc", "t", {"n": n}, id=f"h{n}") for n in range(5)]
    assert [r.offset for r in replies] == [1, 2, 3, 4, 5]
    epoch = replies[0].epoch
    latest = await push.stub.History(pb.HistoryRequest(topic="hist:rpc", limit=2))
    assert [p.offset for p in latest.publications] == [4, 5] and (latest.offset, latest.epoch) == (5, epoch)
    after = await push.stub.History(pb.HistoryRequest(topic="hist:rpc", since_offset=3, epoch=epoch))
    assert after.recovered and [p.frame.count(b'"id":"h') for p in after.publications] == [1, 1]
    assert [p.offset for p in after.publications] == [4, 5]
    stale = await push.stub.History(pb.HistoryRequest(topic="hist:rpc", since_offset=3, epoch="other"))
    assert (stale.recovered, stale.reason, list(stale.publications)) == (False, "epoch changed", [])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await push.stub.History(pb.HistoryRequest(topic="bad topic"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
