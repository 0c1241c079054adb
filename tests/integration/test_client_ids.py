"""A client_id a browser chose belongs to the user who took it first, on every edge and push replica,
and stays theirs for the hold after they leave (security issue 16, items 1 and 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
import websockets
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from pushclient import PushClient
from tests.conftest import start_system
from tests.support.processes import System, another_edge
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout
from tests.support.tokens import exp_of, token
from tests.support.wsclient import WsClient

HELD = (4400, "client_id is held by another user")


@dataclass
class TwoEdges:
    """Two edges, and the push service (address) each one's browsers are published to through."""

    first: str
    second: str
    push_first: str
    push_second: str


@pytest.fixture(scope="module", params=["one-push-two-edges", "two-push-replicas-on-redis"])
def edges(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoEdges]:
    if request.param == "one-push-two-edges":
        system = start_system(tmp_path_factory, "claims")
        try:
            with another_edge(system, "edge-2") as address:
                yield TwoEdges(system.ws_url, f"ws://{address}", system.push_address, system.push_address)
        finally:
            system.stop()
        return
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    env = {"PUSH_BROKER_URL": redis.url}
    systems: list[System] = []
    try:
        systems = [start_system(tmp_path_factory, f"claims-{n}", push_env=env) for n in ("a", "b")]
        a, b = systems
        yield TwoEdges(a.ws_url, b.ws_url, a.push_address, b.push_address)
    finally:
        for system in systems:
            system.stop()
        redis.stop()


async def refused(url: str, **params: str) -> tuple[int, str]:
    """Connect and return the close code and reason the edge answered with (instead of `connected`)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    async with websockets.connect(f"{url}/ws?{query}") as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            frame = await asyncio.wait_for(connection.recv(), timeout(10))
            raise AssertionError(f"expected a close, got {frame!r}")
    assert closed.value.rcvd is not None, "the edge must close with a code"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def note(push_address: str, client_id: str, id_: str) -> None:
    async with PushClient(push_address) as push:
        await push.publish("", "notification", {"for": client_id}, id=id_, client_id=client_id)


async def test_another_user_is_refused_a_chosen_id_held_on_another_edge(edges: TwoEdges):
    client_id = "alice-device"
    alice = await WsClient.connect(edges.first, client_id=client_id, token=token("alice"))
    try:
        assert await refused(edges.second, client_id=client_id, token=token("bob")) == HELD
        assert await refused(edges.first, client_id=client_id, token=token("bob")) == HELD
        # alice herself may hold it on both edges; a personal message reaches both of her connections
        again = await WsClient.connect(edges.second, client_id=client_id, token=token("alice"))
        try:
            await note(edges.push_second, client_id, "to-alice")
            for connection in (alice, again):
                message = await connection.recv()
                assert (message["id"], message["data"]) == ("to-alice", {"for": client_id})
                await connection.expect_silence(0.3)
        finally:
            await again.close()
    finally:
        await alice.close()


async def test_the_id_stays_its_users_while_they_are_away(edges: TwoEdges):
    client_id = "carol-tab"
    carol = await WsClient.connect(edges.first, client_id=client_id, token=token("carol"))
    await carol.close()
    await asyncio.sleep(0.3)  # carol's edge has let go of the id
    # while carol is offline, dave may not take her id (and so never receives her messages) ...
    assert await refused(edges.second, client_id=client_id, token=token("dave")) == HELD
    assert await refused(edges.first, client_id=client_id, token=token("dave")) == HELD
    # ... and carol, coming back on either edge, gets in (no terminal close) and gets her messages
    carol_token = token("carol")
    carol = await WsClient.connect(edges.second, client_id=client_id, token=carol_token)
    try:
        assert carol.welcome["data"] == {"client_id": client_id, "topics": [], "user": "carol",
                                         "expires_at": exp_of(carol_token)}
        await note(edges.push_first, client_id, "to-carol")
        message = await carol.recv()
        assert (message["id"], message["data"]) == ("to-carol", {"for": client_id})
    finally:
        await carol.close()


async def test_anonymous_connections_share_their_chosen_ids_apart_from_users(edges: TwoEdges):
    anonymous = await WsClient.connect(edges.first, client_id="lobby")
    try:
        assert await refused(edges.second, client_id="lobby", token=token("erin")) == HELD
        other = await WsClient.connect(edges.second, client_id="lobby")  # anonymous: one identity
        await other.close()
    finally:
        await anonymous.close()
    erin = await WsClient.connect(edges.second, client_id="erin-id", token=token("erin"))
    try:
        assert await refused(edges.first, client_id="erin-id") == HELD  # nor may anonymous take a user's
    finally:
        await erin.close()


@pytest.mark.parametrize(("request_", "details"), [
    (pb.ClaimClientIdRequest(client_id="", user="ivan"), "invalid client_id"),
    (pb.ClaimClientIdRequest(client_id="~0a1b2c3d4e5f.x", user="ivan"),
     "a client_id may not begin with '~' (kept for the ids the server assigns)"),
    (pb.ClaimClientIdRequest(client_id="c" * 129, user="ivan"), "invalid client_id"),
    (pb.ClaimClientIdRequest(client_id="ivan-id", user=""), "user must not be empty (absent: anonymous)"),
])
async def test_unusable_claims_are_invalid_arguments(edges: TwoEdges, request_, details: str):
    async with grpc.aio.insecure_channel(edges.push_first) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused_claim:
            await pb_grpc.PushServiceStub(channel).ClaimClientId(request_, timeout=timeout(5))
    assert (refused_claim.value.code(), refused_claim.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, details)


HOLD = timeout(3)


@pytest.fixture(scope="module")
def short_hold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, str]]:
    """One push service holding ids for HOLD seconds, two edges on it."""
    system = start_system(tmp_path_factory, "short-hold", push_env={"PUSH_CLIENT_ID_HOLD": str(HOLD)})
    try:
        with another_edge(system, "edge-2") as address:
            yield system, f"ws://{address}"
    finally:
        system.stop()


async def test_the_hold_lasts_while_connected_and_runs_out_after_the_owner_left(short_hold):
    system, second = short_hold
    frank = await WsClient.connect(system.ws_url, client_id="frank-id", token=token("frank"))
    await asyncio.sleep(HOLD * 1.5)  # connected longer than the hold: still frank's
    assert await refused(second, client_id="frank-id", token=token("gina")) == HELD
    await frank.close()
    await asyncio.sleep(0.3)
    assert await refused(second, client_id="frank-id", token=token("gina")) == HELD
    await asyncio.sleep(HOLD * 1.3)  # frank stayed away longer than the hold: the id is free again
    gina_token = token("gina")
    gina = await WsClient.connect(second, client_id="frank-id", token=gina_token)
    try:
        assert gina.welcome["data"] == {"client_id": "frank-id", "topics": [], "user": "gina",
                                        "expires_at": exp_of(gina_token)}
        assert await refused(system.ws_url, client_id="frank-id", token=token("frank")) == HELD
    finally:
        await gina.close()


async def test_a_chosen_id_is_not_accepted_unchecked_while_the_push_service_is_down(short_hold):
    system, _ = short_hold
    system.push.stop()
    assert await refused(system.ws_url, client_id="hana-id", token=token("hana")) == (
        1013, "client_id cannot be checked now; retry later")
