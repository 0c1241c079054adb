"""The fault pass against real containers: the fault suite's publisher, churning subscribers and tally
(tests/support/faults.py) while Docker does to the stack what happens to containers in production:

- `docker kill` of the push replica the stream publisher is writing to, mid-stream; `docker start`
  after FAULT_PAUSE seconds (a killed container is not restarted by its policy: Docker counts a kill
  as a deliberate stop);
- `docker pause` of Redis for 5 s (every process frozen: no reset, no FIN, the replicas' calls wait);
- `docker restart` of an edge (SIGTERM: it drains, closes 1001, and must exit on its own within its
  stop grace period, not be SIGKILLed at its end).

Every message published reaches every subscriber exactly once, in order, or the subscriber is told
(`recovered: false`) that it cannot have it: silent gaps, duplicates and reorders must be 0.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from tests.support.faults import Campaign, Outcome, run_campaign
from tests.support.processes import read_url

from .engine import run
from .stack import ComposeStack

PAUSE = float(os.environ.get("FAULT_PAUSE", "3"))  # seconds a killed replica stays down
REDIS_PAUSE = 5.0


class ContainerFaults:
    def __init__(self, stack: ComposeStack) -> None:
        self.stack = stack
        self.notes: list[str] = []  # what was observed beside the tally (the edge's exit)

    def campaign(self) -> Campaign:
        s = self.stack
        return Campaign([f"ws://127.0.0.1:{s.port(edge, 8000)}" for edge in ("edge-1", "edge-2")],
                        f"127.0.0.1:{s.port('push-1', 50051)},127.0.0.1:{s.port('push-2', 50051)}",
                        s.jwt_secret, s.grpc_token)

    async def healthy(self) -> None:
        await asyncio.to_thread(self.stack.wait_healthy, 120.0)

    async def docker(self, *args: str) -> str:
        return (await asyncio.to_thread(run, ["docker", *args], timeout=120)).stdout

    async def publisher_replica(self) -> str:
        """The replica the stream publisher's messages go through (its PublishStream counter moves)."""
        counts = {}
        for name in ("push-1", "push-2"):
            text = (await asyncio.to_thread(read_url, self.stack.url(name, 9101, "/metrics"))).decode()
            counts[name] = sum(float(line.split()[-1]) for line in text.splitlines()
                               if line.startswith('push_messages_published_total{rpc="PublishStream"}'))
        return max(counts, key=lambda n: counts[n])

    async def kill_publishers_replica(self) -> None:
        replica = await self.publisher_replica()
        container = self.stack.container(replica)
        await self.docker("kill", container)
        await asyncio.sleep(PAUSE)
        await self.docker("start", container)
        self.notes.append(f"docker kill {replica} (the publisher's replica), docker start after {PAUSE:.0f} s")
        await self.healthy()

    async def pause_redis(self) -> None:
        container = self.stack.container("redis")
        await self.docker("pause", container)
        await asyncio.sleep(REDIS_PAUSE)
        await self.docker("unpause", container)

    async def restart_edge(self) -> None:
        container, grace = self.stack.container("edge-1"), self.stack.grace("edge-1")
        since, started = int(time.time()) - 1, time.monotonic()
        await self.docker("restart", "-t", str(grace), container)
        took = time.monotonic() - started
        await self.healthy()
        exits = (await self.docker("events", "--since", str(since), "--until", str(int(time.time()) + 1),
                                   "--filter", f"container={container}", "--filter", "event=die",
                                   "--format", "{{.Actor.Attributes.exitCode}}")).split()
        self.notes.append(f"docker restart edge-1: {took:.1f} s (grace {grace} s), exit code {exits}")
        # 137 would be Docker's SIGKILL at the end of the grace period: the drain did not fit.
        assert exits and exits[0] != "137", f"edge-1 did not exit on its own within {grace} s: exit codes {exits}"

    def scenarios(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {
            "docker kill replica": self.kill_publishers_replica,
            "docker pause redis 5 s": self.pause_redis,
            "docker restart edge": self.restart_edge,
        }


async def fault_pass(stack: ComposeStack) -> tuple[list[Outcome], list[str]]:
    faults = ContainerFaults(stack)
    outcomes = []
    for run_number, (name, fault) in enumerate(faults.scenarios().items()):
        await faults.healthy()
        outcomes.append(await run_campaign(name, run_number, faults.campaign(), fault))
    return outcomes, faults.notes


def violations(outcome: Outcome) -> list[str]:
    """What breaks exactly-once-or-told in one scenario's outcome (nothing, when it holds)."""
    totals = outcome.totals()
    found = [f"{key} {totals[key]}" for key in ("gaps", "duplicates", "reorders") if totals[key]]
    if outcome.reconnects_during_fault == 0:
        found.append("no subscriber reconnected during the fault")
    if not all(t.delivered for s in outcome.subscribers for t in s.tally.values()):
        found.append("a subscriber received nothing on a topic")
    return [f"{outcome.scenario}: {v}" for v in found]
