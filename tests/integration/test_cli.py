"""pushctl (`python -m pushclient`): publish, tail, tasks; bad arguments get one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, System
from tests.support.timing import timeout
from tests.support.tokens import token

pytestmark = pytest.mark.portable


def cli_env(system: System) -> dict[str, str]:
    """pushctl takes the gRPC bearer token from PUSH_TOKEN, as an operator would give it."""
    return {**os.environ, **({"PUSH_TOKEN": system.grpc_token} if system.grpc_token else {})}


def pushctl(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushclient", "--push", system.push_address, "--tasks", system.task_address, *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout(30), env=cli_env(system),
    )


@pytest.mark.parametrize("transport", ["grpc", "sse", "http_stream"])
async def test_publish_and_tail(system: System, transport: str):
    topic = f"cli:{transport}"
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pushclient", "--push", system.push_address, "tail", topic, "--count", "2",
        "--transport", transport, "--edge", system.http_url,
        # A deployment refuses anonymous streams: pushctl then signs in to the edge as a user would.
        *([] if system.anonymous_allowed or transport == "grpc" else ["--edge-token", token("cli-tail")]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=cli_env(system),
    )
    try:
        assert tail.stderr is not None
        ready = await asyncio.wait_for(tail.stderr.readline(), timeout(10))  # the subscription is in effect
        over = "" if transport == "grpc" else f" over {transport}"
        assert ready.decode() == f"pushctl: tailing {topic}{over}\n"
        first = await asyncio.to_thread(pushctl, system, "publish", "--topic", topic, "--type", "t",
                                        "--data", '{"a": 1}', "--id", "cli-1")
        assert (first.returncode, first.stdout, first.stderr) == (0, "cli-1\n", "")
        await asyncio.to_thread(pushctl, system, "publish", "--topic", topic, "--type", "t", "--id", "cli-2")
        out, _ = await asyncio.wait_for(tail.communicate(), timeout(10))
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [m["id"] for m in lines] == ["cli-1", "cli-2"]
    assert lines[0]["data"] == {"a": 1} and lines[0]["topic"] == topic
    assert tail.returncode == 0


async def test_task_start_list_get_cancel(system: System):
    started = await asyncio.to_thread(pushctl, system, "task", "start", "--symbols", "A,B,C", "--interval", "5")
    assert started.returncode == 0, started.stderr
    task = json.loads(started.stdout)
    assert task["params"] == {"symbols": ["A", "B", "C"], "interval": 5.0}
    listed = await asyncio.to_thread(pushctl, system, "task", "list")
    assert task["task_id"] in [json.loads(line)["task_id"] for line in listed.stdout.splitlines()]
    got = await asyncio.to_thread(pushctl, system, "task", "get", task["task_id"])
    assert json.loads(got.stdout)["task_id"] == task["task_id"]
    cancelled = await asyncio.to_thread(pushctl, system, "task", "cancel", task["task_id"])
    assert json.loads(cancelled.stdout)["status"] == "cancelled"


async def test_bad_arguments_get_one_line_and_nonzero_exit(system: System):
    cases = [
        (("publish", "--topic", "bad topic", "--type", "t"), 2, "may contain only"),
        (("publish", "--topic", "ok", "--type", "t", "--data", "{oops"), 2, "not valid JSON"),
        (("publish", "--type", "t"), 2, "one of the arguments --topic --client-id is required"),
        (("tail",), 2, "required"),
        (("nonsense",), 2, "invalid choice"),
        (("task", "cancel", "no-such-task"), 1, "NOT_FOUND"),
        (("task", "start", "--kind", "nope"), 1, "unknown task kind"),
    ]
    for args, code, fragment in cases:
        result = await asyncio.to_thread(pushctl, system, *args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert fragment in result.stderr and "error" in result.stderr
