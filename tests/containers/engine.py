"""A Docker engine and a Compose that answer, on this machine, or a clear reason why not.

Missing programs are installed from Debian's packages (`docker.io`, `docker-compose`, `debootstrap`;
as root only). When no daemon answers, `dockerd` is started here and stopped again by `close()`; a
daemon that was already running is used and left alone. Compose is v2 (`docker compose`) when the
plugin is there, else Debian's docker-compose 1.29.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PACKAGES = {"docker": "docker.io", "dockerd": "docker.io", "docker-compose": "docker-compose",
            "debootstrap": "debootstrap"}


class EngineError(Exception):
    """Docker cannot be made to work here; the message says why."""


def run(argv: list[str], *, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None,
        stdin: int | None = None, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A command's output as text; with `log`, its output goes there instead (appended)."""
    if log is not None:
        with log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                    env=env, stdin=stdin)
    else:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=stdin)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip()[-2000:] if log is None else f"(see {log})"
        raise EngineError(f"`{' '.join(argv[:4])} …` exited {result.returncode}: {detail}")
    return result


def ensure_programs(*programs: str) -> None:
    """Install the Debian packages of the programs that are not on PATH."""
    missing = sorted({PACKAGES[p] for p in programs if shutil.which(p) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise EngineError(f"{', '.join(missing)} missing and not root: install them (apt-get install {' '.join(missing)})")
    if shutil.which("apt-get") is None:
        raise EngineError(f"{', '.join(missing)} missing and no apt-get to install them with")
    print(f"installing from Debian's packages: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def daemon_answers() -> bool:
    return run(["docker", "version", "--format", "{{.Server.Version}}"], check=False, timeout=30).returncode == 0


class Engine:
    """`docker` and a Compose command that work; `close()` stops the daemon if it was started here."""

    def __init__(self, artifacts: Path) -> None:
        self.artifacts = artifacts
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.compose: list[str] = []

    def open(self) -> None:
        have_docker = shutil.which("docker") is not None
        needed = ["docker"]
        if not (have_docker and daemon_answers()):
            needed.append("dockerd")
        if not (have_docker and run(["docker", "compose", "version"], check=False).returncode == 0):
            needed.append("docker-compose")
        if any(shutil.which(p) is None for p in needed):
            ensure_programs(*needed, "debootstrap")  # one apt-get run (debootstrap: for the base images)
        if not daemon_answers():
            self._start_daemon()
        version = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
        self.compose = self._compose_command()
        compose_version = run([*self.compose, "version"]).stdout.strip().splitlines()[0]
        print(f"docker engine {version} ({'started here' if self.dockerd else 'already running'}); "
              f"compose: {' '.join(self.compose)} ({compose_version})", flush=True)

    def _compose_command(self) -> list[str]:
        if run(["docker", "compose", "version"], check=False).returncode == 0:
            return ["docker", "compose"]
        ensure_programs("docker-compose")
        return ["docker-compose"]

    def _start_daemon(self) -> None:
        ensure_programs("dockerd")
        if os.geteuid() != 0:
            raise EngineError("no Docker daemon answers and only root can start one (start dockerd, or run as root)")
        log_path = self.artifacts / "dockerd.log"
        print(f"no Docker daemon answers: starting dockerd (log: {log_path})", flush=True)
        with log_path.open("ab") as log:
            # No userland proxy: published ports by NAT rules, not a copying process per port (the
            # tests' many short HTTP requests pay for every hop on a loaded machine).
            self.dockerd = subprocess.Popen(["dockerd", "--userland-proxy=false"], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not daemon_answers():
            if (code := self.dockerd.poll()) is not None:
                self.dockerd = None
                tail = log_path.read_text(errors="replace")[-3000:]
                raise EngineError(f"dockerd exited with {code} at start; its log ends:\n{tail}")
            if time.monotonic() > deadline:
                self.close()
                raise EngineError(f"dockerd started but did not answer within 60 s (log: {log_path})")
            time.sleep(0.5)

    def close(self) -> None:
        """Stop the daemon started here (SIGTERM: it stops its containerd and containers first)."""
        if self.dockerd is None:
            return
        self.dockerd.send_signal(signal.SIGTERM)
        try:
            self.dockerd.wait(60)
        except subprocess.TimeoutExpired:
            self.dockerd.kill()
            self.dockerd.wait(10)
        print(f"dockerd stopped (exit {self.dockerd.returncode})", flush=True)
        self.dockerd = None
