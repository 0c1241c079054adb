"""Where the integration tests find the system: processes they start themselves (the default), or a
running deployment named by environment variables (a compose stack: `make test-compose` runs the
portable tests against the real containers, tests/containers):

    PUSHTEST_EDGE_URL           http://host:8000            one edge (ws:// is derived)
    PUSHTEST_EDGE_METRICS_URL   http://host:9104/metrics    that edge's /metrics (EDGE_METRICS_PORT)
    PUSHTEST_PUSH_ADDRESS       host:50051                  one push replica, for publishing
    PUSHTEST_TASK_ADDRESS       host:50052
    PUSHTEST_PUSH_METRICS_URLS  http://host:9101/metrics,…  every push replica's /metrics
    PUSHTEST_TASK_METRICS_URL   http://host:9102/metrics
    PUSHTEST_REDIS_URL          redis://host:6379/0         (optional) the replicas' Redis
    PUSHTEST_JWT_SECRET         the edges' EDGE_JWT_HS256_SECRET: tests sign their users' tokens with it
    PUSHTEST_GRPC_TOKEN         (optional) the bearer token the gRPC servers require
    PUSHTEST_ALLOW_ANONYMOUS    false when the edges refuse connections without a token

Only the modules marked `portable` run against such targets; the others need processes of their own
(to kill, restart or configure) and are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ENV_EDGE_URL = "PUSHTEST_EDGE_URL"
SERVICE_ENV_PREFIXES = ("PUSH_", "EDGE_", "TASK_", "PUSHTEST_")  # the services' and the tests' own settings


def external_targets() -> ExternalSystem | None:
    edge = os.environ.get(ENV_EDGE_URL)
    if not edge:
        return None
    env = os.environ
    missing = [name for name in ("PUSHTEST_PUSH_ADDRESS", "PUSHTEST_TASK_ADDRESS", "PUSHTEST_JWT_SECRET")
               if not env.get(name)]
    if missing:
        raise RuntimeError(f"{ENV_EDGE_URL} is set, so these must be too: {', '.join(missing)}")
    http_url = edge.rstrip("/")
    return ExternalSystem(
        http_url=http_url,
        ws_url="ws" + http_url.removeprefix("http"),
        push_address=env["PUSHTEST_PUSH_ADDRESS"],
        task_address=env["PUSHTEST_TASK_ADDRESS"],
        edge_metrics_url=env.get("PUSHTEST_EDGE_METRICS_URL", ""),
        push_metrics_urls=[u for u in env.get("PUSHTEST_PUSH_METRICS_URLS", "").split(",") if u],
        task_metrics_url=env.get("PUSHTEST_TASK_METRICS_URL", ""),
        redis_url=env.get("PUSHTEST_REDIS_URL") or None,
        grpc_token=env.get("PUSHTEST_GRPC_TOKEN") or None,
        anonymous_allowed=env.get("PUSHTEST_ALLOW_ANONYMOUS", "true").lower() not in ("false", "0", "no"),
    )


@dataclass
class ExternalSystem:
    """The same addresses a local System has, of a deployment the tests did not start."""

    http_url: str
    ws_url: str
    push_address: str
    task_address: str
    edge_metrics_url: str = ""
    push_metrics_urls: list[str] = field(default_factory=list)
    task_metrics_url: str = ""
    redis_url: str | None = None
    grpc_token: str | None = None
    anonymous_allowed: bool = True

    def stop(self) -> None:
        """Not ours to stop."""


def run_portable_suite(env: dict[str, str], junit: Path, root: Path, limit: float = 1200) -> tuple[bool, str]:
    """`pytest -m portable` over tests/integration against the deployment that `env`'s PUSHTEST_*
    variables name: (whether every selected test ran and passed, none skipped; a summary)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV_PREFIXES)}
    command = [sys.executable, "-m", "pytest", "-m", "portable", "-p", "no:cacheprovider", "-q",
               f"--junitxml={junit}", "tests/integration"]
    result = subprocess.run(command, env={**inherited, **env}, cwd=root, timeout=limit)
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ok = result.returncode == 0 and passed == counts["tests"] and counts["tests"] >= 30
    return ok, f"{passed} passed of {counts['tests']} portable tests ({counts})"


def pushtest_env(*, edge_url: str, edge_metrics_url: str, push_address: str, task_address: str,
                 push_metrics_urls: list[str], task_metrics_url: str, jwt_secret: str, grpc_token: str | None = None,
                 anonymous_allowed: bool = True) -> dict[str, str]:
    """The PUSHTEST_* variables naming a deployment (what external_targets() reads back)."""
    env = {
        ENV_EDGE_URL: edge_url,
        "PUSHTEST_EDGE_METRICS_URL": edge_metrics_url,
        "PUSHTEST_PUSH_ADDRESS": push_address,
        "PUSHTEST_TASK_ADDRESS": task_address,
        "PUSHTEST_PUSH_METRICS_URLS": ",".join(push_metrics_urls),
        "PUSHTEST_TASK_METRICS_URL": task_metrics_url,
        "PUSHTEST_JWT_SECRET": jwt_secret,
        "PUSHTEST_ALLOW_ANONYMOUS": "true" if anonymous_allowed else "false",
    }
    if grpc_token:
        env["PUSHTEST_GRPC_TOKEN"] = grpc_token
    return env
