"""The system's real processes for integration tests: started with `python -m ...` on free ports,
awaited until healthy, killable with any signal and restartable on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .metrics import publisher_settled
from .targets import SERVICE_ENV_PREFIXES, pushtest_env
from .timing import timeout
from .tokens import SECRET

ROOT = Path(__file__).resolve().parents[2]


_handed_out: set[int] = set()
# Below Linux's ephemeral range (32768-60999): outgoing connections (gRPC clients, the tests' own)
# take their local ports from that range and could take a port between picking and binding it.
SERVICE_PORTS = range(20000, 32768)
PORT_CLAIMS = Path(tempfile.gettempdir()) / "pushtest-port-claims"
_claims: list[int] = []  # the claims' descriptors, open (locked) for the process's life


def free_port() -> int:
    """A port outside the ephemeral range that nothing listens on now, that this test run has not handed
    out before (a stopped service's port may be taken again by its restart, never by another), and that
    no other test process on this machine holds: each port handed out is claimed with a lock that its
    process keeps until it exits. Without it, pytest-xdist's workers (and CI's long and container passes,
    run side by side) drew the same port now and then, and the later service failed to bind it."""
    PORT_CLAIMS.mkdir(exist_ok=True)
    while True:
        port = random.choice(SERVICE_PORTS)
        if port in _handed_out:
            continue
        claim = os.open(PORT_CLAIMS / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            os.close(claim)  # (its lock, if taken, with it)
            continue
        _handed_out.add(port)
        _claims.append(claim)
        return port


@dataclass
class ServiceProcess:
    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    argv: list[str] | None = None  # instead of `python -m module`
    inherit_env: bool = True  # False: only PATH/HOME-like variables of ours, then `env`

    def child_env(self) -> dict[str, str]:
        base = os.environ if self.inherit_env else {
            k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV_PREFIXES)}
        return {**base, **self.env, "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        env = self.child_env()
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv or [sys.executable, "-m", self.module], env=env, stdout=log, stderr=log, cwd=ROOT
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                self.proc.wait(timeout=timeout(10))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout(5))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


async def wait_grpc_serving(address: str, service: ServiceProcess, limit: float = 60.0) -> None:
    deadline = time.monotonic() + timeout(limit)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if service.proc is not None and service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service.name} not serving at {address}:\n{service.log_tail()}")
            await asyncio.sleep(0.05)


def read_url(url: str) -> bytes:
    """The body of a GET (blocking: from async code, through asyncio.to_thread)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


async def wait_http_ok(url: str, service: ServiceProcess, limit: float = 60.0) -> None:
    deadline = time.monotonic() + timeout(limit)
    while await asyncio.to_thread(http_status, url) != 200:
        if service.proc is not None and service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready:\n{service.log_tail()}")
        await asyncio.sleep(0.05)


@dataclass
class System:
    """push_service + task_service + ws_edge, each a real process on its own free port."""

    workdir: Path
    push_env: dict[str, str] = field(default_factory=dict)
    task_env: dict[str, str] = field(default_factory=dict)
    edge_env: dict[str, str] = field(default_factory=dict)
    single_process: bool = False

    def __post_init__(self) -> None:
        self.push_port, self.task_port, self.edge_port = free_port(), free_port(), free_port()
        self.task_metrics_port, self.push_metrics_port = free_port(), free_port()
        self.edge_metrics_port = free_port()
        self.push_address = f"127.0.0.1:{self.push_port}"
        self.task_address = f"127.0.0.1:{self.task_port}"
        self.http_url = f"http://127.0.0.1:{self.edge_port}"
        self.ws_url = f"ws://127.0.0.1:{self.edge_port}"
        self.push_metrics_urls = [f"http://127.0.0.1:{self.push_metrics_port}/metrics"]
        self.task_metrics_url = f"http://127.0.0.1:{self.task_metrics_port}/metrics"
        self.edge_metrics_url = f"http://127.0.0.1:{self.edge_metrics_port}/metrics"
        self.grpc_token: str | None = None
        self.anonymous_allowed = True
        self.redis_url: str | None = None
        self.push = ServiceProcess(
            "push_service", "push_service",
            {"PUSH_PORT": str(self.push_port), "PUSH_METRICS_PORT": str(self.push_metrics_port), **self.push_env},
            self.workdir / "push.log",
        )
        self.tasks = ServiceProcess(
            "task_service", "task_service",
            {"TASK_PORT": str(self.task_port), "TASK_PUSH_ADDRESS": self.push_address,
             "TASK_METRICS_PORT": str(self.task_metrics_port), **self.task_env},
            self.workdir / "tasks.log",
        )
        self.edge = ServiceProcess(
            "ws_edge", "ws_edge",
            {
                "EDGE_PORT": str(self.edge_port),
                "EDGE_METRICS_PORT": str(self.edge_metrics_port),
                "EDGE_PUSH_ADDRESS": self.push_address,
                "EDGE_TASK_ADDRESS": self.task_address,
                "EDGE_PUSH_RECONNECT_MAX": "0.5",
                "EDGE_JWT_HS256_SECRET": SECRET,
                "EDGE_DEV_TOKENS": "true",
                **self.edge_env,
            },
            self.workdir / "edge.log",
        )
        if self.single_process:  # `python -m single_process`: the push service inside the edge's process
            self.edge = ServiceProcess("single_process", "single_process", {**self.push.env, **self.edge.env},
                                       self.workdir / "edge.log")
            self.push = self.edge  # killing "the push service" kills the edge too, as it would there

    async def start(self) -> None:
        if self.push is not self.edge:
            self.push.start()
        self.tasks.start()
        self.edge.start()
        await self.wait_push()
        await wait_grpc_serving(self.task_address, self.tasks)
        await self.wait_edge_ready()
        if "TASK_PUSH_ADDRESS" not in self.task_env:
            await self.wait_task_list_published()

    async def wait_task_list_published(self) -> None:
        try:
            await publisher_settled(self.task_metrics_url, timeout(30))
        except AssertionError as exc:
            raise RuntimeError(f"{exc} (log: {self.tasks.log_path})") from None

    async def wait_push(self) -> None:
        await wait_grpc_serving(self.push_address, self.push)

    async def wait_edge_ready(self) -> None:
        await wait_http_ok(self.http_url + "/readyz", self.edge)

    def portable_env(self) -> dict[str, str]:
        """The PUSHTEST_* variables (tests/support/targets.py) naming this system."""
        return pushtest_env(edge_url=self.http_url, edge_metrics_url=self.edge_metrics_url,
                            push_address=self.push_address, task_address=self.task_address,
                            push_metrics_urls=self.push_metrics_urls, task_metrics_url=self.task_metrics_url,
                            jwt_secret=SECRET, grpc_token=self.grpc_token, anonymous_allowed=self.anonymous_allowed)

    def stop(self) -> None:
        for service in (self.edge, self.tasks, self.push):
            service.stop()


@contextlib.contextmanager
def another_edge(system: System, name: str) -> Iterator[str]:
    """Another edge process on `system`'s push service, ready (its own port, no metrics port); yields
    its `host:port`, stops it after."""
    port = free_port()
    edge = ServiceProcess(name, "ws_edge", {**system.edge.env, "EDGE_PORT": str(port), "EDGE_METRICS_PORT": "0"},
                          system.workdir / f"{name}.log")
    edge.start()
    try:
        asyncio.run(wait_http_ok(f"http://127.0.0.1:{port}/readyz", edge))
        yield f"127.0.0.1:{port}"
    finally:
        edge.stop()


def http_json(method: str, url: str, body: dict | None = None, bearer: str | None = None) -> tuple[int, dict]:
    """One JSON HTTP call: (status, parsed body), HTTP errors included."""
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {bearer}"} if bearer else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
