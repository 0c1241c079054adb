"""docker-compose.yml and the Dockerfile: the compose file is valid Compose, its services are the
Dockerfile's stages, and every service's own command, environment and healthcheck work: started as
local processes (tests/support/compose_local.py), they become healthy, and the portable integration
tests pass against them given only the environment a compose stack would give."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.support.compose_local import COMPOSE_FILE, ComposeError, LocalCompose, interpolate
from tests.support.deployment import FROM_SECRET, SECRET_VARIABLES, deployment_problems, dockerfile_stages
from tests.support.processes import ROOT
from tests.support.timing import timeout

# The Compose Specification's JSON Schema, beside the checkout (../shared); COMPOSE_SPEC overrides.
COMPOSE_SPEC = Path(os.environ.get("COMPOSE_SPEC", ROOT.parent / "shared" / "compose-spec.json"))
VARIABLES = {
    "PUSH_JWT_SECRET": "compose-test-secret-that-is-longer-than-thirty-two-bytes",
    "PUSH_GRPC_TOKEN": "compose-test-grpc-token",
}


def test_the_compose_file_validates_against_the_compose_specification():
    assert COMPOSE_SPEC.exists(), f"the Compose schema is expected at {COMPOSE_SPEC} (set COMPOSE_SPEC)"
    schema = json.loads(COMPOSE_SPEC.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft7Validator(schema).iter_errors(yaml.safe_load(COMPOSE_FILE.read_text()))]
    assert errors == []


def test_the_compose_services_are_the_dockerfiles_stages_with_their_commands_and_healthchecks():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    stages = dockerfile_stages()
    assert {"redis", "push-1", "push-2", "edge-1", "edge-2", "task"} == set(services)
    for name, service in services.items():
        assert "healthcheck" in service and service.get("restart") == "unless-stopped", name
        if "build" not in service:
            continue
        stage = stages[service["build"]["target"]]
        assert service["command"] == stage["cmd"], name
        assert service["healthcheck"]["test"] == ["CMD", *stage["healthcheck"]], name  # type: ignore[misc]
        assert stage["from"] == "runtime", name
        # A deployment (tests/support/deployment.py, as deploy/k8s): only its service's variables, no
        # anonymous browsers or demo tokens, metrics and API docs off the public port; secrets come
        # from the environment without defaults (`${VAR:?...}`, checked below).
        env = {k: FROM_SECRET if k in SECRET_VARIABLES and str(v).startswith("${") and ":?" in str(v) else str(v)
               for k, v in service["environment"].items()}
        assert deployment_problems(service["build"]["target"], env) == [], name
    assert stages["runtime"]["user"] == "10001:10001"  # the final stages inherit the unprivileged user
    edge_env = services["edge-1"]["environment"]
    with pytest.raises(ComposeError, match="PUSH_JWT_SECRET"):
        interpolate(edge_env["EDGE_JWT_HS256_SECRET"], {})


def test_a_third_party_healthcheck_asks_the_local_port_of_its_own_service(tmp_path):
    # `redis-cli ping -p N` would send `PING -p N` to 6379: healthy whenever any Redis runs there (as on
    # a developer's machine), never where none does (as in CI).
    compose = LocalCompose(tmp_path, VARIABLES)
    port = compose.local_port("redis", 6379)
    assert compose.healthcheck("redis") == ["redis-cli", "-p", str(port), "ping"]
    nothing_listening = subprocess.run(compose.healthcheck("redis"), capture_output=True, timeout=timeout(30))
    assert nothing_listening.returncode != 0, nothing_listening


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCompose]:
    compose = LocalCompose(tmp_path_factory.mktemp("compose"), VARIABLES)
    try:
        asyncio.run(compose.up())
    except BaseException:
        compose.down()
        raise
    yield compose
    compose.down()


def test_every_service_starts_with_its_compose_command_and_becomes_healthy(stack: LocalCompose):
    assert list(stack.processes) == ["redis", "push-1", "push-2", "task", "edge-1", "edge-2"]
    for name, process in stack.processes.items():
        assert process.proc is not None and process.proc.poll() is None, name
        assert stack.healthy(name), name
    # The replicas and the task service found each other through the `push` alias: both replicas.
    assert stack.environment("edge-1")["EDGE_PUSH_ADDRESS"] == (
        f"127.0.0.1:{stack.local_port('push-1', 50051)},127.0.0.1:{stack.local_port('push-2', 50051)}")


def test_the_integration_suite_passes_against_the_stack_given_only_its_environment(stack: LocalCompose):
    def url(service: str, port: int, path: str = "") -> str:
        return f"http://127.0.0.1:{stack.local_port(service, port)}{path}"

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PUSH_", "EDGE_", "TASK_", "PUSHTEST_"))},
        "PUSHTEST_EDGE_URL": url("edge-1", 8000),
        "PUSHTEST_EDGE_METRICS_URL": url("edge-1", 9104, "/metrics"),
        "PUSHTEST_PUSH_ADDRESS": f"127.0.0.1:{stack.local_port('push-1', 50051)}",
        "PUSHTEST_TASK_ADDRESS": f"127.0.0.1:{stack.local_port('task', 50052)}",
        "PUSHTEST_PUSH_METRICS_URLS": f"{url('push-1', 9101, '/metrics')},{url('push-2', 9101, '/metrics')}",
        "PUSHTEST_TASK_METRICS_URL": url("task", 9102, "/metrics"),
        "PUSHTEST_REDIS_URL": f"redis://127.0.0.1:{stack.local_port('redis', 6379)}/0",
        "PUSHTEST_JWT_SECRET": VARIABLES["PUSH_JWT_SECRET"],
        "PUSHTEST_GRPC_TOKEN": VARIABLES["PUSH_GRPC_TOKEN"],
        "PUSHTEST_ALLOW_ANONYMOUS": "false",
    }
    command = [sys.executable, "-m", "pytest", "-m", "portable", "-p", "no:cacheprovider", "-q", "tests/integration"]
    collected = subprocess.run([*command, "--collect-only"], env=env, cwd=ROOT, capture_output=True, text=True,
                               timeout=timeout(120))
    portable = int(re.search(r"(\d+)/\d+ tests collected", collected.stdout)[1])  # type: ignore[index]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout(600))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.match(rf"{portable} passed, \d+ deselected in ", summary), summary  # nothing skipped or failed
    assert portable >= 30, collected.stdout[-500:]
