from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pushclient import PushClient
from tests.support.processes import System
from tests.support.targets import ENV_EDGE_URL, ExternalSystem, external_targets
from tests.support.tokens import token
from tests.support.wsclient import WsClient, connect_client

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EXTERNAL = external_targets()
TEST_USER = "tester"  # whose token the `ws` fixture presents where the edge refuses anonymous connections


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if EXTERNAL is None:
        return
    skip = pytest.mark.skip(reason=f"needs processes of its own; the tests target {ENV_EDGE_URL}")
    for item in items:
        if "portable" not in item.keywords:
            item.add_marker(skip)


def start_system(tmp_path_factory: pytest.TempPathFactory, name: str, single_process: bool = False,
                 **envs: dict[str, str]) -> System:
    system = System(tmp_path_factory.mktemp(name), single_process=single_process, **envs)
    try:
        asyncio.run(system.start())
    except BaseException:
        system.stop()
        raise
    return system


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System | ExternalSystem]:
    """The whole system with default settings, shared by a test module: started here, or the
    deployment that PUSHTEST_* names (tests/support/targets.py)."""
    if EXTERNAL is not None:
        yield EXTERNAL
        return
    system = start_system(tmp_path_factory, "system")
    yield system
    system.stop()


@pytest.fixture
async def push(system: System) -> AsyncIterator[PushClient]:
    async with PushClient(system.push_address, token=system.grpc_token) as client:
        yield client


@pytest.fixture
def transport() -> str:
    """The transport the `ws` fixture's clients use; a test parametrised over `transport` (websocket,
    sse, http_stream: tests/support/wsclient.py TRANSPORTS) runs once over each."""
    return "websocket"


@pytest.fixture
async def ws(system: System, transport: str) -> AsyncIterator:
    """`await ws(path="/ws", **query)`: a connected client of the module's edge over `transport`,
    closed after the test."""
    clients: list[WsClient] = []

    async def connect(path: str = "/ws", **params: str) -> WsClient:
        if not system.anonymous_allowed and "token" not in params:
            params["token"] = token(TEST_USER)
        client = await connect_client(transport, system, path, **params)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()
