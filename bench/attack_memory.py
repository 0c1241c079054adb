"""The memory a signed-in user could make the push service keep (issue 16.2 and 16.9), as RSS.

    .venv/bin/python -m bench.attack_memory

Starts a push service (memory engine, history on `user:*` with a 1 s age, as a deployment's
send_message topics could be), then: 5,000 messages of 1 KB to 5,000 distinct `user:` topics (what
`send_message` to many recipients does), RSS at once and 5 s later; then 1,000 idempotent 60 KB
messages, RSS after. Run it against another checkout with PYTHONPATH=<checkout>:<checkout>/gen.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from pushclient import PushClient
from tests.support.processes import free_port

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


async def attack(address: str, pid: int) -> dict[str, float]:
    figures = {"start": rss_mib(pid)}
    async with PushClient(address) as push:
        kilobyte = "x" * 1000
        for start in range(0, 5000, 250):
            await asyncio.gather(*(push.publish(f"user:u{n}", "notification", {"m": kilobyte})
                                   for n in range(start, start + 250)))
        figures["after 5,000 topics"] = rss_mib(pid)
        await asyncio.sleep(5)
        figures["5 s later (age 1 s)"] = rss_mib(pid)
        big = "y" * 60_000
        for start in range(0, 1000, 50):
            await asyncio.gather(*(push.publish("feed:big", "m", {"b": big}, idempotency_key=f"k{n}")
                                   for n in range(start, start + 50)))
        figures["after 1,000 keyed 60 KB"] = rss_mib(pid)
    return figures


def main() -> None:
    port, metrics = free_port(), free_port()
    env = {**os.environ, "PUSH_PORT": str(port), "PUSH_METRICS_PORT": str(metrics),
           "PUSH_HISTORY_RULES": '[{"pattern": "user:*", "size": 100, "ttl": 1}]', "PUSH_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "push_service"], env=env)
    try:
        time.sleep(3)
        figures = asyncio.run(attack(f"127.0.0.1:{port}", process.pid))
    finally:
        process.terminate()
        process.wait(10)
    for name, value in figures.items():
        print(f"| {name} | {value:.1f} MiB |")


if __name__ == "__main__":
    main()
