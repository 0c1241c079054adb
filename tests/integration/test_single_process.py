"""`python -m single_process`: the push service inside the edge's process, linked by the in-process channel
(common/inprocess_grpc.py). The portable suite runs against it whole, as it runs against the containers."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from pushclient import PushClient
from single_process.__main__ import USAGE
from tests.conftest import start_system
from tests.support.metrics import reaches
from tests.support.processes import ROOT, System
from tests.support.publishing import publish_through_stream
from tests.support.targets import run_portable_suite
from tests.support.timing import timeout
from tests.support.wsclient import WsClient, unpack


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "single", single_process=True)
    yield system
    system.stop()


@pytest.mark.timeout(timeout(900))
def test_the_portable_suite_passes_against_one_process(single: System, tmp_path: Path):
    ok, summary = run_portable_suite(single.portable_env(), tmp_path / "junit.xml", ROOT, limit=timeout(800))
    assert ok, summary


async def test_a_publish_over_grpc_reaches_a_browser_through_the_in_process_link(single: System):
    client = await WsClient.connect(single.ws_url, topics="one")
    async with PushClient(single.push_address) as push:
        await push.publish("one", "note", {"n": 1}, id="m1")
    assert [(m["type"], m["id"], m["data"]) for m in unpack([await client.recv(5)])] == [("note", "m1", {"n": 1})]
    await client.close()
    assert single.push is single.edge  # one process
    assert "edge stream 1@in-process opened" in single.edge.log_path.read_text()  # the in-process channel


def test_arguments_are_refused_with_a_usage_line():
    result = subprocess.run([sys.executable, "-m", "single_process", "--port", "1"], capture_output=True, text=True,
                            cwd=ROOT, timeout=timeout(60))
    assert (result.returncode, result.stderr.strip()) == (2, USAGE)


@pytest.fixture
def own_single(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "single-sigterm", single_process=True)
    yield system
    system.stop()


async def test_sigterm_closes_clients_with_going_away_then_stops_the_push_service(own_single: System):
    system = own_single
    client = await WsClient.connect(system.ws_url, topics="bye")
    await publish_through_stream(system.push_address, "bye", 300, "b")
    # All 300 in the edge, unread by the client: what SIGTERM must flush.
    await reaches(system.edge_metrics_url, "ws_edge_messages_received_total", 300, within=timeout(10))
    system.edge.kill(signal.SIGTERM)
    received: list[dict] = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            received.extend(unpack([await client.recv(10)]))
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "going away")
    assert [m["id"] for m in received] == [f"b{n}" for n in range(300)]
    # uvicorn re-raises the signal it caught once shut down; the push service stopped before that.
    assert system.edge.proc.wait(timeout(15)) == -signal.SIGTERM  # type: ignore[union-attr]
    log = system.edge.log_path.read_text()
    assert log.index("edge stream 1@in-process closed") < log.index("push service stopped")
