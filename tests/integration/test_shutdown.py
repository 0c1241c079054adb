"""SIGTERM: the edge flushes then closes with 1001; the push service drains; running tasks are marked."""

from __future__ import annotations

import signal

import pytest
import websockets

from tests.conftest import start_system
from tests.support.metrics import reaches
from tests.support.processes import System
from tests.support.publishing import publish_through_stream
from tests.support.timing import timeout
from tests.support.wsclient import WsClient, unpack


@pytest.fixture
def own_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "shutdown", edge_env={"EDGE_PUSH_RECONNECT_MAX": "0.3"})
    yield system
    system.stop()


async def test_sigterm_on_the_edge_flushes_then_closes_with_going_away(own_system: System):
    system = own_system
    client = await WsClient.connect(system.ws_url, topics="bye")
    await publish_through_stream(system.push_address, "bye", 300, "b")
    # All 300 in the edge (not a fixed wait): what SIGTERM must flush.
    await reaches(system.edge_metrics_url, "ws_edge_messages_received_total", 300, within=timeout(10))
    system.edge.kill(signal.SIGTERM)
    received: list[dict] = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            received.extend(unpack([await client.recv(10)]))
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "going away")
    assert [m["id"] for m in received] == [f"b{n}" for n in range(300)]
    # uvicorn re-raises the signal it caught once shut down, so a supervisor sees why it ended.
    assert system.edge.proc.wait(timeout(15)) == -signal.SIGTERM  # type: ignore[union-attr]


async def test_sigterm_on_the_push_service_ends_streams_cleanly_and_edges_come_back(own_system: System):
    system = own_system
    system.push.kill(signal.SIGTERM)
    assert system.push.proc.wait(timeout(15)) == 0  # type: ignore[union-attr]
    assert "ended by the server" in system.edge.log_path.read_text()
    system.push.start()
    await system.wait_push()
    await system.wait_edge_ready()


async def test_sigterm_on_the_task_service_marks_running_tasks(own_system: System):
    system = own_system
    client = await WsClient.connect(system.ws_url, "/ws/task", topics="task:status")
    try:
        ack = await client.request({"type": "task_start", "id": "t", "data": {"params": {"interval": 5}}})
        task_id = ack["data"]["task"]["task_id"]
        statuses = []
        while "running" not in statuses:
            statuses.extend(m["data"]["status"] for m in unpack([await client.recv()]))
        system.tasks.kill(signal.SIGTERM)
        while "failed" not in statuses:
            batch = unpack([await client.recv(10)])
            statuses.extend(m["data"]["status"] for m in batch)
        last = batch[-1]["data"]
        assert (last["task_id"], last["status"], last["error"]) == (
            task_id, "failed", "interrupted: the task service shut down")
        assert system.tasks.proc.wait(timeout(15)) == 0  # type: ignore[union-attr]
    finally:
        await client.close()
