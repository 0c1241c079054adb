"""docker-compose.yml's services as local processes: each service's own command and environment,
with what only a container network provides translated for one machine.

- Every port a service `expose`s gets a free local port: an environment value that is one of the
  service's own exposed ports (its listening port) becomes that free port, and `name:port` pointing at
  another service (or a network alias, e.g. `push` for both replicas) becomes `127.0.0.1:<its port>`
  (a comma-separated list when the alias names several services).
- `0.0.0.0` (listen on every interface of the container) becomes 127.0.0.1.
- `${VAR:?message}`, `${VAR:-default}` and `${VAR}` are interpolated as Compose does, from `variables`.
- Services built from our Dockerfile run their `command` and `healthcheck` with this interpreter in
  place of `python`; a third-party image's command (Redis) runs as given, plus its local port.

Why it stays beside the real containers (`make test-compose`, tests/containers): the fault suite
(tests/faults) and the soak (bench/soak.py) need what containers make slow or impossible — SIGSTOP of
one process, a black-hole proxy between one edge and one replica, short heartbeat intervals set per
service, Redis restarted empty — on any machine, without Docker, within `make test`. What it no
longer does: run the portable suite against the compose services (the real containers do that).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .processes import ROOT, ServiceProcess, free_port
from .timing import timeout

COMPOSE_FILE = ROOT / "docker-compose.yml"
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|:-)(?P<arg>[^}]*))?\}")


class ComposeError(Exception):
    pass


def interpolate(value: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = variables.get(name)
        if given:
            return given
        if op == ":?":
            raise ComposeError(f"required variable {name} is missing: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(replace, value)


@dataclass
class LocalCompose:
    workdir: Path
    variables: dict[str, str]
    document: dict[str, Any] = field(default_factory=lambda: yaml.safe_load(COMPOSE_FILE.read_text()))
    # Per service, environment set over the compose file's (already local: ports, addresses), e.g. a
    # test's short intervals or a proxy between two services.
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = self.document["services"]
        self.ports = {(name, int(port)): free_port()
                      for name, service in self.services.items() for port in service.get("expose", [])}
        self.hosts: dict[str, list[str]] = {name: [name] for name in self.services}
        for name, service in self.services.items():
            for network in (service.get("networks") or {}).values():
                for alias in (network or {}).get("aliases", []):
                    self.hosts.setdefault(alias, []).append(name)
        self.processes: dict[str, ServiceProcess] = {}

    # --- translation -----------------------------------------------------------------------------

    def local_port(self, service: str, container_port: int) -> int:
        return self.ports[(service, container_port)]

    def address(self, host: str, container_port: int) -> str:
        return ",".join(f"127.0.0.1:{self.ports[(s, container_port)]}" for s in self.hosts[host])

    def localize(self, service: str, value: str) -> str:
        value = interpolate(value, self.variables)
        if value == "0.0.0.0":
            return "127.0.0.1"
        if value.isdigit() and (service, int(value)) in self.ports:
            return str(self.ports[(service, int(value))])
        names = "|".join(re.escape(h) for h in sorted(self.hosts, key=len, reverse=True))
        return re.sub(rf"(?<![\w.-])({names}):(\d+)\b", lambda m: self.address(m[1], int(m[2])), value)

    def environment(self, service: str) -> dict[str, str]:
        raw = self.services[service].get("environment") or {}
        return {**{key: self.localize(service, str(value)) for key, value in raw.items()},
                **self.overrides.get(service, {})}

    def ours(self, service: str) -> bool:
        return "build" in self.services[service]

    def local_command(self, service: str, argv: list[str]) -> list[str]:
        argv = [interpolate(str(a), self.variables) for a in argv]
        if self.ours(service):
            if argv[0] != "python":
                raise ComposeError(f"{service}: expected a `python ...` command, got {argv}")
            return [sys.executable, *argv[1:]]
        (port,) = [p for (s, p) in self.ports if s == service]
        return [*argv, "--port", str(self.local_port(service, port)), "--bind", "127.0.0.1"]

    def healthcheck(self, service: str) -> list[str]:
        test = self.services[service]["healthcheck"]["test"]
        if test[0] != "CMD":
            raise ComposeError(f"{service}: healthcheck must be the exec form [CMD, ...]")
        if self.ours(service):
            return self.local_command(service, test[1:])
        # A third-party image's check is a client that takes its port as an option, which must come
        # before the command (`redis-cli -p N ping`: after `ping`, `-p N` would be PING's arguments,
        # sent to the default port 6379).
        (port,) = [p for (s, p) in self.ports if s == service]
        program, *arguments = test[1:]
        return [program, "-p", str(self.local_port(service, port)), *arguments]

    # --- running -------------------------------------------------------------------------------

    def order(self) -> list[str]:
        """Services in dependency order (depends_on first)."""
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done:
                return
            if name in path:
                raise ComposeError(f"dependency cycle: {' -> '.join((*path, name))}")
            for dependency in self.services[name].get("depends_on") or {}:
                visit(dependency, (*path, name))
            done.append(name)

        for name in self.services:
            visit(name, ())
        return done

    def healthy(self, service: str) -> bool:
        result = subprocess.run(self.healthcheck(service), env=self.processes[service].child_env(),
                                capture_output=True, timeout=30, cwd=ROOT)
        return result.returncode == 0

    async def wait_healthy(self, service: str, limit: float = 30.0) -> None:
        deadline = time.monotonic() + timeout(limit)
        process = self.processes[service]
        while not await asyncio.to_thread(self.healthy, service):
            if process.proc is not None and process.proc.poll() is not None:
                raise ComposeError(f"{service} exited ({process.proc.returncode}):\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise ComposeError(f"{service} not healthy in {limit:.0f}s:\n{process.log_tail()}")
            await asyncio.sleep(0.2)

    async def up(self) -> None:
        for service in self.order():
            spec = self.services[service]
            process = ServiceProcess(
                service, "", self.environment(service), self.workdir / f"{service}.log",
                argv=self.local_command(service, spec["command"]), inherit_env=False,
            )
            self.processes[service] = process
            process.start()
            await self.wait_healthy(service)

    def down(self) -> None:
        for service in reversed(list(self.processes)):
            self.processes[service].stop()
