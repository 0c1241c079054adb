"""deploy/k8s: every resource the kustomization lists is valid for the Kubernetes versions we state
(kubernetes-validate's schemas, strict: no unknown fields), each container runs its Dockerfile stage's
command with only its service's variables and a deployment's settings (tests/support/deployment.py,
the checks docker-compose.yml gets too), probes ask the health endpoints the services serve on the
ports they listen on, and the edge's grace period covers its drain. Then the services are started as
local processes with the manifests' own environments and every probe is asked as the kubelet would."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

import ws_edge.__main__ as edge_main
from tests.support.deployment import FROM_SECRET, deployment_problems, dockerfile_stages
from tests.support.processes import ROOT, ServiceProcess, free_port, read_url
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout

K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are for (gRPC probes are GA since 1.27, policy/v1 PDBs since
# 1.21) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SECRET = "pushsystem"  # the Secret every credential comes from (README: Operations → Kubernetes)
SECRET_KEYS = {"grpc-token", "jwt-secret", "redis-url"}
# Preparing to stop: the preStop hook's sleep, then ws_edge's drain and uvicorn's own graceful stop.
UVICORN_GRACEFUL_SHUTDOWN = 3.0


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources() -> list[dict[str, Any]]:
    found = []
    for name in kustomization()["resources"]:
        found += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return found


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def environment(spec: dict[str, Any]) -> dict[str, str | None]:
    """A container's variables: literal values, or FROM_SECRET (checked to name our Secret's keys)."""
    env: dict[str, str | None] = {}
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET and ref["key"] in SECRET_KEYS and not ref.get("optional"), variable
            env[variable["name"]] = FROM_SECRET
    return env


def stage_of(spec: dict[str, Any]) -> str:
    """The Dockerfile stage an image is built from: `pushsystem/<stage>` (as docker-compose.yml names them)."""
    match = re.fullmatch(r"pushsystem/([a-z-]+)", spec["image"])
    assert match, f"{spec['image']}: the tag comes from the kustomization's `images`"
    return match[1]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_is_valid_for_the_stated_kubernetes_version(version: str):
    errors = []
    for resource in resources():
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {exc.message}")
    assert errors == []


def test_the_kustomization_lists_every_manifest_and_sets_every_image():
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    images = {spec["image"] for d in of_kind("Deployment").values() for spec in [container(d)]}
    assert images == {entry["name"] for entry in kustomization()["images"]}


def test_each_deployment_runs_its_stages_command_as_a_deployment():
    stages = dockerfile_stages()
    deployments = of_kind("Deployment")
    assert set(deployments) == {"push", "task", "edge"}
    for name, deployment in deployments.items():
        spec, pod = container(deployment), deployment["spec"]["template"]["spec"]
        stage = stage_of(spec)
        assert spec["command"] == stages[stage]["cmd"] and stages[stage]["from"] == "runtime", name
        assert deployment_problems(stage, environment(spec)) == [], name
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"], name
        assert spec["resources"]["requests"]["cpu"] and spec["resources"]["requests"]["memory"], name
    assert stages["runtime"]["user"] == "10001:10001"


def listening_port(spec: dict[str, Any]) -> int:
    env = environment(spec)
    (port,) = [int(v) for k, v in env.items() if k.endswith("_PORT") and "METRICS" not in k and v]
    return port


def probe_port(spec: dict[str, Any], probe: dict[str, Any]) -> int:
    port = (probe.get("grpc") or probe["httpGet"])["port"]
    if isinstance(port, str):
        (port,) = [p["containerPort"] for p in spec["ports"] if p["name"] == port]
    return port


def test_probes_ask_the_health_endpoints_on_the_port_each_service_listens_on():
    for name, deployment in of_kind("Deployment").items():
        spec = container(deployment)
        port = listening_port(spec)
        assert port in {p["containerPort"] for p in spec["ports"]}, name
        for kind in ("readinessProbe", "livenessProbe"):
            probe = spec[kind]
            assert probe_port(spec, probe) == port, (name, kind)
            if stage_of(spec) == "ws-edge":  # ready: the push stream holds its interest; live: it answers
                assert probe["httpGet"]["path"] == {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}[kind]
            else:
                assert "grpc" in probe and "service" not in probe["grpc"], (name, kind)  # the overall status


def test_the_edges_grace_period_covers_its_drain():
    pod = of_kind("Deployment")["edge"]["spec"]["template"]["spec"]
    pre_stop = float(container(of_kind("Deployment")["edge"])["lifecycle"]["preStop"]["exec"]["command"][1])
    needed = pre_stop + edge_main.GO_AWAY_TIMEOUT + 1 + UVICORN_GRACEFUL_SHUTDOWN
    assert pod["terminationGracePeriodSeconds"] >= needed + 5  # and a margin for the lifespan's close


def test_services_headless_push_replicas_and_disruption_budgets():
    services, budgets = of_kind("Service"), of_kind("PodDisruptionBudget")
    assert set(services) == {"push", "push-replicas", "task", "edge"}
    assert services["push-replicas"]["spec"]["clusterIP"] == "None"
    assert not services["push-replicas"]["spec"].get("publishNotReadyAddresses")  # a draining pod leaves DNS
    deployments = of_kind("Deployment")
    for name in ("edge", "task"):
        assert environment(container(deployments[name]))[f"{name.upper()}_PUSH_ADDRESS"] == "push-replicas:50051"
    for name, service in services.items():
        component = service["spec"]["selector"]["app.kubernetes.io/name"]
        labels = deployments[component]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == component, name
        named = {p["name"] for p in container(deployments[component])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named, name
    # Replicated tiers keep all but one pod through a voluntary disruption (a node drain).
    assert {n: b["spec"] for n, b in budgets.items()} == {
        "push": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "push"}}},
        "edge": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "edge"}}},
    }
    assert all(deployments[n]["spec"]["replicas"] >= 2 for n in budgets)


# --- the manifests' environments, run -----------------------------------------------------------------


class LocalPods:
    """One pod per Deployment as a local process: its environment with the Secret's values filled in
    and Services' names mapped to the local ports of what they select."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        self.workdir = workdir
        self.secret = {"grpc-token": "k8s-test-grpc-token", "redis-url": redis_url,
                       "jwt-secret": "k8s-test-secret-that-is-longer-than-thirty-two-bytes"}
        self.deployments = of_kind("Deployment")
        self.ports = {(name, p["containerPort"]): free_port()
                      for name, d in self.deployments.items() for p in container(d)["ports"]}
        self.processes: dict[str, ServiceProcess] = {}

    def service_address(self, match: re.Match[str]) -> str:
        (service,) = [s for n, s in of_kind("Service").items() if n == match[1]]
        return f"127.0.0.1:{self.ports[(service['spec']['selector']['app.kubernetes.io/name'], int(match[2]))]}"

    def environment(self, name: str) -> dict[str, str]:
        spec, local = container(self.deployments[name]), {}
        for variable in spec["env"]:
            value = variable.get("value")
            if value is None:
                value = self.secret[variable["valueFrom"]["secretKeyRef"]["key"]]
            elif value == "0.0.0.0":
                value = "127.0.0.1"
            elif value.isdigit() and (name, int(value)) in self.ports:
                value = str(self.ports[(name, int(value))])
            else:
                value = re.sub(r"\b(push|push-replicas|task|edge):(\d+)\b", self.service_address, value)
            local[variable["name"]] = value
        return local

    def start(self, name: str) -> None:
        spec = container(self.deployments[name])
        assert spec["command"][0] == "python"
        process = ServiceProcess(name, spec["command"][2], self.environment(name), self.workdir / f"{name}.log",
                                 inherit_env=False)
        self.processes[name] = process
        process.start()

    async def probe(self, name: str, kind: str) -> bool:
        spec = container(self.deployments[name])
        probe = spec[kind]
        port = self.ports[(name, probe_port(spec, probe))]
        if "grpc" in probe:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                           timeout=probe["timeoutSeconds"])
                except grpc.aio.AioRpcError:
                    return False
                return reply.status == health_pb2.HealthCheckResponse.SERVING
        try:
            await asyncio.to_thread(read_url, f"http://127.0.0.1:{port}{probe['httpGet']['path']}")
        except OSError:  # urllib's HTTPError (503) and URLError are OSErrors
            return False
        return True

    async def wait_ready(self, name: str, limit: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(limit)
        while not await self.probe(name, "readinessProbe"):
            process = self.processes[name]
            assert process.proc is not None and process.proc.poll() is None, process.log_tail()
            assert loop.time() < deadline, f"{name} not ready:\n{process.log_tail()}"
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[LocalPods]:
    with RedisServer(tmp_path) as redis:
        local = LocalPods(tmp_path, redis.url)
        try:
            yield local
        finally:
            local.stop()


async def test_the_manifests_environments_start_services_whose_probes_pass(pods: LocalPods):
    for name in ("push", "task", "edge"):  # what each needs first
        pods.start(name)
        await pods.wait_ready(name)
        assert await pods.probe(name, "livenessProbe"), name
    assert pods.processes["edge"].env["EDGE_PUSH_ADDRESS"] == f"127.0.0.1:{pods.ports[('push', 50051)]}"
    # The edge's metrics are on their own port, not on the public one.
    assert b"ws_edge_connections" in await asyncio.to_thread(
        read_url, f"http://127.0.0.1:{pods.ports[('edge', 9104)]}/metrics")
