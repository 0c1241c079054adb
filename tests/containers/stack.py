"""docker-compose.yml brought up by Compose (v2 or 1.29) under a project name of its own, on free host
ports, with the images tests/containers/images.py made; its containers by service; and `down -v`.

What is read from the compose file rather than repeated here: the services, each published port's
variable (`"${HOST_PORT_EDGE_1:-8000}:8000"`), the images' repositories and Dockerfile targets, and the
stop grace periods.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import ROOT, free_port
from tests.support.targets import SERVICE_ENV_PREFIXES, pushtest_env

from .engine import EngineError, run

COMPOSE_FILE = ROOT / "docker-compose.yml"
_PUBLISHED = re.compile(r"^\$\{(?P<variable>HOST_PORT_\w+):-\d+\}:(?P<port>\d+)$")


def compose_document() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def published_port_variables(document: dict[str, Any]) -> dict[tuple[str, int], str]:
    """(service, container port) → the variable that names its host port."""
    found = {}
    for name, service in document["services"].items():
        for entry in service.get("ports", []):
            match = _PUBLISHED.match(entry)
            if match is None:
                raise EngineError(f"{name}: port {entry!r} is not of the form \"${{HOST_PORT_…:-N}}:PORT\"")
            found[(name, int(match["port"]))] = match["variable"]
    return found


def built_images(document: dict[str, Any]) -> dict[str, str]:
    """Dockerfile target → image repository (the part of `image:` before the tag)."""
    return {service["build"]["target"]: service["image"].partition(":${IMAGE_TAG")[0]
            for service in document["services"].values() if "build" in service}


def grace_seconds(service: dict[str, Any]) -> int:
    value = str(service.get("stop_grace_period", "10s"))
    return int(value.removesuffix("s"))


@dataclass
class ComposeStack:
    compose: list[str]  # ["docker", "compose"] or ["docker-compose"]
    images: dict[str, str]  # IMAGE_TAG, PYTHON_IMAGE, REDIS_IMAGE
    project: str = field(default_factory=lambda: f"pushtest{secrets.token_hex(4)}")
    document: dict[str, Any] = field(default_factory=compose_document)

    def __post_init__(self) -> None:
        self.ports = {key: free_port() for key in published_port_variables(self.document)}
        self.jwt_secret = secrets.token_urlsafe(48)
        self.grpc_token = secrets.token_urlsafe(24)
        self.env = {
            **_inherited_env(),
            **self.images,
            **{variable: str(self.ports[key]) for key, variable in published_port_variables(self.document).items()},
            "PUSH_JWT_SECRET": self.jwt_secret,
            "PUSH_GRPC_TOKEN": self.grpc_token,
        }
        self.services: list[str] = list(self.document["services"])
        self.containers: dict[str, str] = {}  # service → container id (kept across kill, pause, restart)

    def run(self, *args: str, timeout: float = 300, check: bool = True, log: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        return run([*self.compose, "-p", self.project, "-f", str(COMPOSE_FILE), *args], env=self.env,
                   timeout=timeout, check=check, log=log)

    def port(self, service: str, container_port: int) -> int:
        return self.ports[(service, container_port)]

    def url(self, service: str, container_port: int, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port(service, container_port)}{path}"

    def container(self, service: str) -> str:
        if service not in self.containers:
            ids = self.run("ps", "-q", service).stdout.split()
            if len(ids) != 1:
                raise EngineError(f"{service}: expected one container, found {ids}")
            self.containers[service] = ids[0]
        return self.containers[service]

    def grace(self, service: str) -> int:
        return grace_seconds(self.document["services"][service])

    def up(self, log: Path) -> None:
        self.run("up", "-d", "--no-build", log=log, timeout=600)

    def states(self) -> dict[str, str]:
        """Per service: `running/healthy`, `running/starting`, `exited/`, …"""
        ids = {self.container(s): s for s in self.services}
        lines = run(["docker", "inspect", "--format",
                     "{{.Id}} {{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}", *ids]).stdout
        states = {}
        for line in lines.splitlines():
            container, state = line.split()
            states[next(s for c, s in ids.items() if container.startswith(c))] = state
        return states

    def wait_healthy(self, limit: float = 180.0) -> float:
        """Until every container is running and healthy; the seconds it took."""
        started = time.monotonic()
        while True:
            states = self.states()
            if all(state == "running/healthy" for state in states.values()):
                return time.monotonic() - started
            broken = {s: st for s, st in states.items() if st.startswith(("exited", "dead")) or st.endswith("unhealthy")}
            if broken or time.monotonic() - started > limit:
                raise EngineError(f"not every service became healthy within {limit:.0f} s: {states}")
            time.sleep(1)

    def save_logs(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            out = self.run("logs", "--no-color", "--timestamps", service, check=False, timeout=60)
            (directory / f"{service}.log").write_text(out.stdout + out.stderr)
        states = self.run("ps", check=False, timeout=60)
        (directory / "ps.txt").write_text(states.stdout + states.stderr)

    def down(self, log: Path) -> None:
        result = self.run("down", "-v", "--remove-orphans", log=log, check=False, timeout=300)
        if result.returncode != 0:
            raise EngineError(f"`compose down -v` failed for project {self.project} (see {log})")

    def portable_env(self) -> dict[str, str]:
        """The PUSHTEST_* variables (tests/support/targets.py) naming this stack."""
        return pushtest_env(
            edge_url=self.url("edge-1", 8000), edge_metrics_url=self.url("edge-1", 9104, "/metrics"),
            push_address=f"127.0.0.1:{self.port('push-1', 50051)}",
            task_address=f"127.0.0.1:{self.port('task', 50052)}",
            push_metrics_urls=[self.url("push-1", 9101, "/metrics"), self.url("push-2", 9101, "/metrics")],
            task_metrics_url=self.url("task", 9102, "/metrics"), jwt_secret=self.jwt_secret,
            grpc_token=self.grpc_token, anonymous_allowed=False)


def _inherited_env() -> dict[str, str]:
    """This process's environment without the services' and tests' own settings (a developer's
    PUSH_* must not leak into the stack's interpolation)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith((*SERVICE_ENV_PREFIXES, "HOST_PORT_", "COMPOSE_", "IMAGE_TAG"))}
