"""What every deployment description must get right about our services, whatever its format
(docker-compose.yml, deploy/k8s): each container runs its Dockerfile stage's command, sets only
variables its service reads, and is configured as a deployment (no anonymous browsers, no demo tokens,
metrics and API docs off the public port, secrets never written in the file).

Shared by tests/deploy/test_compose.py and tests/deploy/test_kubernetes.py."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from pydantic_settings import BaseSettings

from push_service.config import PushSettings
from task_service.config import TaskSettings
from ws_edge.config import EdgeSettings

from .processes import ROOT

# Per Dockerfile stage: the settings class of the service it runs (its variables' prefix and names).
STAGE_SETTINGS: dict[str, type[BaseSettings]] = {
    "push-service": PushSettings,
    "task-service": TaskSettings,
    "ws-edge": EdgeSettings,
}
# Variables that hold a secret: a deployment takes them from elsewhere (an environment without
# defaults, a Secret), never from the file.
SECRET_VARIABLES = frozenset({"PUSH_AUTH_TOKEN", "TASK_AUTH_TOKEN", "TASK_PUSH_TOKEN", "EDGE_GRPC_TOKEN",
                              "EDGE_JWT_HS256_SECRET"})
FROM_SECRET = None  # a variable's value in `env` below when it comes from a secret store


def dockerfile_stages() -> dict[str, dict[str, object]]:
    """Per stage: its base, CMD and HEALTHCHECK command (exec forms), and USER."""
    stages: dict[str, dict[str, object]] = {}
    current: dict[str, object] = {}
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if match := re.match(r"FROM (\S+) AS (\S+)", line):
            current = stages[match[2]] = {"from": match[1]}
        elif match := re.match(r"CMD (\[.*\])", line):
            current["cmd"] = json.loads(match[1])
        elif match := re.match(r"HEALTHCHECK .*CMD (\[.*\])", line):
            current["healthcheck"] = json.loads(match[1])
        elif match := re.match(r"USER (\S+)", line):
            current["user"] = match[1]
    return stages


def known_variables(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


def deployment_problems(stage: str, env: Mapping[str, str | None]) -> list[str]:
    """What is wrong with one container of stage `stage` given its environment (a value None: from a
    secret store). Empty when nothing is."""
    problems = [f"{name}: not a setting of {stage} (ignored: a typo?)"
                for name in sorted(set(env) - known_variables(STAGE_SETTINGS[stage]))]
    problems += [f"{name}: a secret written in the file" for name in sorted(SECRET_VARIABLES & set(env))
                 if env[name] is not FROM_SECRET]
    if stage == "ws-edge":
        if env.get("EDGE_ALLOW_ANONYMOUS") != "false":
            problems.append("EDGE_ALLOW_ANONYMOUS must be false in a deployment")
        if "EDGE_DEV_TOKENS" in env:
            problems.append("EDGE_DEV_TOKENS (demo token minting) must not be set")
        if env.get("EDGE_API_DOCS") != "false":
            problems.append("EDGE_API_DOCS must be false (no /docs on the public port)")
        if env.get("EDGE_METRICS_PORT") in (None, env.get("EDGE_PORT"), "0"):
            problems.append("EDGE_METRICS_PORT must be a port of its own")
        if "EDGE_JWT_HS256_SECRET" not in env and "EDGE_JWT_PUBLIC_KEY_FILE" not in env:
            problems.append("the edge needs EDGE_JWT_HS256_SECRET or EDGE_JWT_PUBLIC_KEY_FILE")
    return problems
