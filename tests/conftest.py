from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pushclient import PushClient
from tests.support.processes import System
from tests.support.wsclient import WsClient

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def start_system(tmp_path_factory: pytest.TempPathFactory, name: str, **envs: dict[str, str]) -> System:
    system = System(tmp_path_factory.mktemp(name), **envs)
    try:
        asyncio.run(system.start())
    except BaseException:
        system.stop()
        raise
    return system


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The whole system with default settings, shared by a test module."""
    system = start_system(tmp_path_factory, "system")
    yield system
    system.stop()


@pytest.fixture
async def push(system: System) -> AsyncIterator[PushClient]:
    async with PushClient(system.push_address) as client:
        yield client


@pytest.fixture
async def ws(system: System) -> AsyncIterator:
    """`await ws(path="/ws", **query)`: a connected WsClient to the module's edge, closed after the test."""
    clients: list[WsClient] = []

    async def connect(path: str = "/ws", **params: str) -> WsClient:
        client = await WsClient.connect(system.ws_url, path, **params)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()
