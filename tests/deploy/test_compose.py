"""docker-compose.yml and the Dockerfile, read: the compose file is valid Compose (the Specification's
schema) that Debian's docker-compose 1.29 also takes, its services are the Dockerfile's stages, its
containers are hardened, its host ports and images can be moved, and an edge's stop grace period
covers its drain. `make test-compose` (tests/containers) runs it with Docker: images built, the stack
up, the portable integration tests and a fault pass against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.containers.images import content_hash, copied_sources
from tests.containers.stack import built_images, grace_seconds, published_port_variables
from tests.support.compose_local import COMPOSE_FILE, ComposeError, LocalCompose, interpolate
from tests.support.deployment import FROM_SECRET, SECRET_VARIABLES, deployment_problems, dockerfile_stages
from tests.support.processes import ROOT
from tests.support.timing import timeout
from ws_edge.__main__ import DRAIN_SECONDS

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


def test_debians_compose_1_29_takes_the_file_and_the_project_name_is_given_outside_it():
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert "name" not in document and "version" not in document  # 1.29 refuses `name:`; `version` is obsolete
    assert "COMPOSE_PROJECT_NAME=" in (ROOT / ".env.example").read_text()


def test_every_host_port_and_image_can_be_moved_and_defaults_to_the_documented_one():
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    ports = published_port_variables(document)  # every `ports` entry is "${HOST_PORT_…:-N}:PORT"
    defaults = {f"{service}:{port}": int(re.search(rf"\${{{variable}:-(\d+)}}", COMPOSE_FILE.read_text())[1])
                for (service, port), variable in ports.items()}  # type: ignore[index]
    assert defaults == {"push-1:50051": 50051, "push-1:9101": 9101, "push-2:50051": 50053, "push-2:9101": 9103,
                        "task:50052": 50052, "task:9102": 9102, "edge-1:8000": 8000, "edge-1:9104": 9104,
                        "edge-2:8000": 8001, "edge-2:9104": 9105}
    assert len(set(ports.values())) == len(ports)
    assert built_images(document) == {"push-service": "pushsystem/push-service", "task-service": "pushsystem/task-service",
                                      "ws-edge": "pushsystem/ws-edge"}
    assert document["services"]["redis"]["image"] == "${REDIS_IMAGE:-redis:7.2-alpine}"
    assert "6379" not in str(document["services"]["redis"].get("ports", ""))  # Redis: this network only


def test_containers_are_read_only_unprivileged_and_given_the_time_to_drain():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, service in services.items():
        assert service["read_only"] is True, name
        if "build" in service:
            assert service["cap_drop"] == ["ALL"] and service["security_opt"] == ["no-new-privileges:true"], name
            assert service["tmpfs"] == ["/tmp"], name
    # Redis's own builds start in protected mode (refusing other hosts) unless told otherwise.
    assert services["redis"]["command"][-2:] == ["--protected-mode", "no"]
    for edge in ("edge-1", "edge-2"):
        assert grace_seconds(services[edge]) > DRAIN_SECONDS >= 9, edge  # else Docker SIGKILLs a draining edge
    assert "STOPSIGNAL SIGTERM" in (ROOT / "Dockerfile").read_text()


def test_the_images_content_hash_follows_what_the_dockerfile_copies_and_nothing_else(tmp_path, monkeypatch):
    assert copied_sources((ROOT / "Dockerfile").read_text()) == [
        "requirements-runtime.txt", "requirements.txt", "proto", "common", "pushclient", "push_service",
        "task_service", "ws_edge"]
    before = content_hash("sha256:base")
    assert content_hash("sha256:other-base") != before
    for name in ("Dockerfile", "requirements-runtime.txt", "requirements.txt", "common", "push_service", "ws_edge",
                 "task_service", "pushclient", "proto"):
        target = tmp_path / name
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.write_bytes(source.read_bytes())
    (tmp_path / "tests").mkdir()
    monkeypatch.setattr("tests.containers.images.ROOT", tmp_path)
    assert content_hash("sha256:base") == before
    (tmp_path / "tests" / "new_test.py").write_text("# tests are not in the images\n")
    (tmp_path / "ws_edge" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "ws_edge" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"bytecode")
    assert content_hash("sha256:base") == before
    (tmp_path / "ws_edge" / "config.py").write_text((tmp_path / "ws_edge" / "config.py").read_text() + "\n")
    assert content_hash("sha256:base") != before
