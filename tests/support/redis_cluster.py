"""A real Redis Cluster of the test's own: `masters` redis-servers with `--cluster-enabled yes` and a
replica each, on free ports (the cluster bus too: `--cluster-port`, so it never lands in the ephemeral
range), joined with `redis-cli --cluster create`. Started once per test module or session (about a
second), torn down by the test. A node can be killed (`stop()`: kill -9, a shard's master dying), the
test can wait for its replica to take over, and `start()` it again: it comes back empty (`--save ""`)
as the new master's replica."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from .processes import free_port
from .redis_server import RedisServer, Started
from .timing import timeout

NODE_TIMEOUT_MS = 1000  # a dead master is failed over after about this (plus an election)


class ClusterNode(RedisServer):
    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.bus_port = free_port()
        super().__init__(workdir, "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"),
                         "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-port", str(self.bus_port),
                         # A replica is in sync a moment after the cluster is made (not 5 s later), and
                         # may take over however long ago it last heard from its master.
                         "--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0")
        self.address = f"127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run([_redis_cli(), "-p", str(self.port), *args], capture_output=True, text=True,
                              timeout=timeout(10), check=True)
        return done.stdout.strip()


class RedisCluster(Started):
    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.nodes = [ClusterNode(workdir / f"node{n}") for n in range(masters * (1 + replicas))]
        self.replicas = replicas

    @property
    def url(self) -> str:
        """The engine's URL: every node as a seed (any one that answers is enough)."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run([_redis_cli(), "--cluster", "create", *(n.address for n in self.nodes), "--cluster-replicas",
                        str(self.replicas), "--cluster-yes"], capture_output=True, text=True,
                       timeout=timeout(30), check=True)
        self.wait_until_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def wait_until_ok(self, within: float = 30) -> None:
        """Until every live node says the cluster is ok, they agree on who serves each slot, and every
        live replica is in sync with its master."""
        deadline = time.monotonic() + timeout(within)
        while True:
            try:
                states = {node.cli("CLUSTER", "INFO").splitlines()[0].strip() for node in self.live()}
                views = {tuple(sorted(self.masters_by(node).items())) for node in self.live()}
                synced = all("master_link_status:up" in node.cli("INFO", "replication")
                             for node in self.live() if "role:slave" in node.cli("INFO", "replication"))
                if states == {"cluster_state:ok"} and len(views) == 1 and synced:
                    return
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the redis cluster did not become ok")
            time.sleep(0.1)

    def masters_by(self, node: ClusterNode) -> dict[str, str]:
        """node id → address of every master serving slots, as `node` sees it (live ones only)."""
        masters = {}
        for line in node.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
                masters[fields[0]] = fields[1].split("@")[0]
        return masters

    def node_for_slot(self, slot: int) -> ClusterNode:
        """The master serving `slot` now."""
        return self.slot_map()(slot)

    def slot_map(self) -> Callable[[int], ClusterNode]:
        """Who serves which slot now, as a function (one CLUSTER SLOTS)."""
        with redis.Redis(port=self.live()[0].port) as client:
            ranges = [(start, end, master[1]) for start, end, master, *_ in client.execute_command("CLUSTER SLOTS")]

        def owner(slot: int) -> ClusterNode:
            port = next(port for start, end, port in ranges if start <= slot <= end)
            return next(node for node in self.nodes if node.port == port)

        return owner

    def client(self, node: ClusterNode) -> redis.Redis:
        return redis.Redis(port=node.port)


def _redis_cli() -> str:
    binary = shutil.which("redis-cli")
    assert binary, "redis-cli is missing: `make test` installs Debian's redis-tools"
    return binary
