"""Operations: every service's /metrics moves with the traffic it handles (exact counts where the
test is the only traffic); logs are one format with the connection id; bad settings stop the start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from pushclient import PublishError, PushClient
from pushclient.client import outgoing
from tests.conftest import TEST_USER, start_system
from tests.support.metrics import moved, publisher_settled, scrape, value
from tests.support.processes import ROOT, System
from tests.support.timing import timeout
from tests.support.tokens import token
from tests.support.wsclient import WsClient

portable = pytest.mark.portable


def edge_metrics(system: System) -> str:
    assert system.edge_metrics_url, "PUSHTEST_EDGE_METRICS_URL: the edge's /metrics (EDGE_METRICS_PORT)"
    return system.edge_metrics_url


async def settled(urls: list[str], name: str) -> float:
    """The gauge once two reads 0.2 s apart agree (earlier tests' connections may still be leaving)."""
    last = value(scrape(*urls), name)
    for _ in range(50):
        await asyncio.sleep(0.2)
        now = value(scrape(*urls), name)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{name} did not settle")


@portable
async def test_assigned_client_ids_cost_the_push_service_no_interest_each(system: System, ws):
    """An edge declares one channel for every client_id it assigns (its mark); a chosen id is one each."""
    channels = await settled(system.push_metrics_urls, "push_channels")
    assigned = [await ws() for _ in range(20)]
    assert len({client.client_id.partition(".")[0] for client in assigned}) == 1
    assert value(scrape(*system.push_metrics_urls), "push_channels") == channels
    chosen = [await ws(client_id=f"ops-chosen-{n}") for n in range(3)]
    # `connected` follows the push service applying the interest: the gauge shows it already.
    assert value(scrape(*system.push_metrics_urls), "push_channels") == channels + len(chosen)


@portable
async def test_metrics_move_on_every_service(system: System, ws, push: PushClient):
    readers = [await ws(topics="ops:metrics") for _ in range(2)]
    # Subscriptions are in effect once `connected` arrived; the gauges show them.
    edge_before, push_before = scrape(edge_metrics(system)), scrape(*system.push_metrics_urls)
    assert value(edge_before, "ws_edge_connections") >= 2
    assert value(edge_before, "ws_edge_subscriptions") >= 2
    assert value(edge_before, "ws_edge_push_connected") == 1
    assert value(push_before, "push_edge_streams") >= 1 and value(push_before, "push_topics") >= 1

    for n in range(5):
        await push.publish("ops:metrics", "m", {"n": n}, id=f"unary-{n}")
    stream = push.stream_publisher()
    stream.start()
    for n in range(3):
        stream.submit(outgoing("ops:metrics", "m", {"n": n}, id=f"stream-{n}"))
    await stream.flush()
    await stream.close()
    for reader in readers:
        assert [m["id"] for m in await reader.messages(8)] == [f"unary-{n}" for n in range(5)] + [
            f"stream-{n}" for n in range(3)]
    bad = readers[0]
    await bad.send_raw("{not json")
    assert (await bad.recv())["error"]["code"] == "INVALID_JSON"
    assert (await bad.request({"type": "ping", "id": "still-here"}))["type"] == "pong"

    edge_after, push_after = scrape(edge_metrics(system)), scrape(*system.push_metrics_urls)
    assert moved(push_before, push_after, "push_messages_published_total", rpc="Publish") == 5
    assert moved(push_before, push_after, "push_messages_published_total", rpc="PublishStream") == 3
    assert moved(push_before, push_after, "push_messages_sent_total") == 8  # one edge wants the topic
    assert moved(push_before, push_after, "push_edge_batch_messages_sum") == 8
    assert moved(edge_before, edge_after, "ws_edge_messages_received_total") == 8
    assert moved(edge_before, edge_after, "ws_edge_messages_delivered_total") == 16
    assert moved(edge_before, edge_after, "ws_edge_push_batch_messages_sum") == 8
    assert moved(edge_before, edge_after, "ws_edge_delivery_latency_seconds_count") == 8
    assert moved(edge_before, edge_after, "ws_edge_client_frames_total") == 2
    assert moved(edge_before, edge_after, "ws_edge_error_frames_total", code="INVALID_JSON") == 1
    for name in ("ws_edge_messages_coalesced_total", "ws_edge_messages_dropped_total",
                 "ws_edge_slow_consumer_disconnects_total", "ws_edge_push_reconnects_total",
                 "ws_edge_send_queue_messages", "ws_edge_topics"):
        assert any(key[0] == name for key in edge_after), f"{name} missing from the edge's /metrics"
    for name in ("push_channels", "push_edge_queue_batches", "push_edge_streams_opened_total"):
        assert any(key[0] == name for key in push_after), f"{name} missing from the push service's /metrics"


@portable
async def test_task_service_metrics_move_with_a_task(system: System, ws):
    before = await publisher_settled(system.task_metrics_url, timeout(10))
    watcher = await ws("/ws/task", topics="task:status")
    started = await watcher.request({"type": "task_start", "id": "go",
                                     "data": {"params": {"symbols": ["A"], "interval": 0}}})
    task_id = started["data"]["task"]["task_id"]
    for _ in range(200):
        frame = await watcher.recv(10)
        statuses = frame["messages"] if frame["type"] == "batch" else [frame]
        if any(m["data"]["task_id"] == task_id and m["data"]["status"] == "completed" for m in statuses):
            break
    else:
        raise AssertionError("the task did not complete")
    after = scrape(system.task_metrics_url)
    assert moved(before, after, "task_started_total", kind="data_collection") == 1
    assert moved(before, after, "task_finished_total", status="completed") == 1
    # pending, running, completed: a task_status and a task_list each, and two progress steps (0 and 1
    # of 1 symbol). The publisher counts a message when the push service's answer arrives, which can
    # be after the browser got it: wait for the count, then check it is exactly that.
    for _ in range(100):
        if moved(before, after, "push_publisher_accepted_messages_total") >= 8:
            break
        await asyncio.sleep(0.05)
        after = scrape(system.task_metrics_url)
    assert moved(before, after, "push_publisher_accepted_messages_total") == 8
    assert value(after, "push_publisher_dropped_messages_total") == 0


@pytest.fixture
def own_system(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    system = start_system(tmp_path_factory, "own", **request.param)
    yield system
    system.stop()


# (The task service publishes elsewhere: its retained task list, sent at start and on every reconnect,
# would count its own failed publishes here.)
@pytest.mark.parametrize("own_system", [{"push_env": {"PUSH_BROKER_URL": "redis://127.0.0.1:1/0"},
                                         "task_env": {"TASK_PUSH_ADDRESS": "127.0.0.1:1"}}], indirect=True)
async def test_redis_errors_are_counted(own_system: System):
    """The Redis engine counts what failed; here Redis is not there at all."""
    async with PushClient(own_system.push_address) as push:
        with pytest.raises(PublishError, match="UNAVAILABLE"):
            await push.publish("ops:redis", "m", {})
    samples = scrape(*own_system.push_metrics_urls)
    assert value(samples, "push_redis_errors_total", operation="publish") == 1
    assert value(samples, "push_messages_rejected_total", rpc="Publish", code="UNAVAILABLE") == 1


@pytest.mark.parametrize("own_system", [{"edge_env": {"EDGE_LOG_FORMAT": "json", "EDGE_LOG_LEVEL": "debug",
                                                      "EDGE_CLIENT_TIMEOUT": "3", "EDGE_HEARTBEAT_CHECK_INTERVAL": "0.2"},
                                         "push_env": {"PUSH_LOG_FORMAT": "json"}}], indirect=True)
async def test_json_logs_carry_the_connection_id(own_system: System):
    system = own_system
    silent = await WsClient.connect(system.ws_url, client_id="silent", token=token(TEST_USER))
    client = await WsClient.connect(system.ws_url, client_id="log-me", token=token(TEST_USER))
    await client.request({"type": "ping", "id": "p"})
    await client.close()
    await silent.connection.wait_closed()  # closed by the heartbeat sweeper, which logs it
    assert silent.connection.close_code == 4000
    await asyncio.sleep(0.3)
    system.stop()
    sweeper_lines = [json.loads(line) for line in system.edge.log_path.read_text().splitlines()
                     if "heartbeat timeout, closing" in line]
    assert [line["conn"].split(":", 1)[1] for line in sweeper_lines] == ["silent"]
    for log_path in (system.edge.log_path, system.push.log_path):
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        assert lines and all(set(line) >= {"ts", "level", "logger", "conn", "msg"} for line in lines)
    edge_lines = [json.loads(line) for line in system.edge.log_path.read_text().splitlines()]
    about_it = [line for line in edge_lines if line["msg"].startswith("#") and "client_id=log-me" in line["msg"]]
    assert about_it, "no line about the connection"
    conn = about_it[0]["conn"]
    assert conn.endswith(":log-me")
    assert [line["msg"].split(" ", 1)[1] for line in edge_lines if line["conn"] == conn][-1] == "= closed"
    push_lines = [json.loads(line) for line in system.push.log_path.read_text().splitlines()]
    assert any(line["conn"].startswith("edge-") and "opened" in line["msg"] for line in push_lines)


@pytest.mark.parametrize(
    ("module", "args", "env", "fragment"),
    [
        ("push_service", ["--port", "abc"], {}, "port"),
        ("push_service", [], {"PUSH_LOG_LEVEL": "LOUD"}, "log_level"),
        ("push_service", [], {"PUSH_BROKER_URL": "kafka://k:9092"}, "unsupported broker URL"),
        ("push_service", [], {"PUSH_BROKER_URL": "redis+cluster://nohost"}, "bad node 'nohost'"),
        ("push_service", [], {"PUSH_SCHED_SLICE_US": "50"}, "shortest slice is 100 µs"),
        ("push_service", [], {"PUSH_HISTORY_RULES": '[{"size": 5}]'}, "history rule 1 must be an object with a pattern"),
        ("push_service", [], {"PUSH_HISTORY_RULES": '[{"pattern": "a:*"}, {"pattern": "*", "size": 5}]'},
         "history rule 2 (*): a rule that keeps messages needs a ttl"),
        ("push_service", [], {"PUSH_HISTORY_RULES": '{"pattern"'}, "history rules are not JSON"),
        ("push_service", [], {"PUSH_HISTORY_RULES": '[{"pattern": "*", "size": "abc", "ttl": 5}]'},
         "size must be a whole number"),
        ("task_service", [], {"TASK_METRICS_PORT": "70000"}, "metrics_port"),
        ("ws_edge", [], {"EDGE_LOG_FORMAT": "xml"}, "log_format"),
        ("ws_edge", [], {"EDGE_METRICS_PORT": "70000"}, "metrics_port"),
        ("ws_edge", [], {"EDGE_ALLOW_ANONYMOUS": "false"}, "EDGE_ALLOW_ANONYMOUS=false needs"),
        ("ws_edge", [], {"EDGE_TRUSTED_PROXIES": "10.0.0.0/8,ingress"}, "'ingress' is not an address or a network"),
    ],
)
def test_a_bad_setting_stops_the_start_with_a_clear_message(module: str, args: list[str], env: dict, fragment: str):
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **env}, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"{module}: invalid configuration" in result.stderr and fragment in result.stderr


def test_command_line_flags_override_the_environment():
    result = subprocess.run([sys.executable, "-m", "push_service", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=30)
    assert result.returncode == 0
    assert "--broker-url" in result.stdout and "--metrics-port" in result.stdout


def test_healthcheck_command_says_unhealthy_when_nothing_listens():
    env = {**os.environ, "PUSH_PORT": "1", "EDGE_PORT": "1", "TASK_PORT": "1"}
    for service in ("push_service", "task_service", "ws_edge"):
        result = subprocess.run([sys.executable, "-m", f"{service}.healthcheck"], env=env, cwd=ROOT,
                                capture_output=True, timeout=30)
        assert result.returncode == 1, (service, result.stderr)
