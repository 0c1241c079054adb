"""What the running stack's containers must be (README, Deployment): the project's images non-root
with a healthcheck and SIGTERM as their stop signal, every container on a read-only root filesystem,
and no certificate authority of this machine's (/usr/local/share/ca-certificates: the test CAs that let
this machine's pip reach the index) inside any of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .engine import run
from .stack import ComposeStack

LOCAL_CAS = Path("/usr/local/share/ca-certificates")
CA_PLACES = "/etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates /etc/pki /run/secrets"


def pem_bodies(text: str) -> set[str]:
    return {re.sub(r"\s", "", body) for body in
            re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)}


def machine_cas() -> set[str]:
    return {body for path in LOCAL_CAS.glob("*.crt") for body in pem_bodies(path.read_text())} \
        if LOCAL_CAS.is_dir() else set()


def container_problems(stack: ComposeStack, built: set[str]) -> list[str]:
    """Everything wrong with the running containers (empty when all is as it should be)."""
    problems = []
    ours = machine_cas()
    for service in stack.services:
        container = stack.container(service)
        info = json.loads(run(["docker", "inspect", container]).stdout)[0]
        if not info["HostConfig"]["ReadonlyRootfs"]:
            problems.append(f"{service}: root filesystem is writable")
        if info["Config"]["Image"].rpartition(":")[0] in built:
            config = info["Config"]
            if config.get("User") != "10001:10001":
                problems.append(f"{service}: runs as {config.get('User')!r}, not 10001:10001")
            if config.get("StopSignal") != "SIGTERM" or not config.get("Healthcheck"):
                problems.append(f"{service}: stop signal {config.get('StopSignal')}, healthcheck {config.get('Healthcheck')}")
            if any(v.split("=")[0] in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE") for v in config.get("Env", [])):
                problems.append(f"{service}: a certificate setting in its environment")
        found = run(["docker", "exec", container, "sh", "-c", f"find {CA_PLACES} -type f -exec cat {{}} + 2>/dev/null"],
                    check=False).stdout
        if info["Config"]["Image"].rpartition(":")[0] in built and not pem_bodies(found):
            problems.append(f"{service}: no CA bundle read, so the check below would prove nothing")
        if pem_bodies(found) & ours:
            problems.append(f"{service}: holds a certificate authority of this machine's ({LOCAL_CAS})")
    return problems
