"""The Kubernetes manifests: each kustomization builds, every object validates against the Kubernetes and KEDA
schemas, and the built fleet keeps the rules the deploy guide promises (one source of truth for stream keys)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from deploy.support import K8S, SCHEMAS, build, kustomizations, of_kind

from dispatcher.settings import Settings
from dispatcher.store.keys import GROUP, KeySpace

KUBERNETES_VERSION = "1.30.0"
KEDA_KINDS = {
    "ScaledObject": "keda-scaledobject-v1alpha1",
    "TriggerAuthentication": "keda-triggerauthentication-v1alpha1",
}
# The redis-streams scaler's metadata keys (shared/schemas/README.md): a misspelt key is silently ignored by KEDA.
STREAMS_KEYS = {
    "address",
    "host",
    "port",
    "addresses",
    "hosts",
    "ports",
    "stream",
    "consumerGroup",
    "pendingEntriesCount",
    "streamLength",
    "lagCount",
    "activationLagCount",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
    "addressFromEnv",
    "hostFromEnv",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
}
RESTRICTED = {"drop": ["ALL"]}
FOLDERS = kustomizations()
WORKER_FOLDERS = [f for f in FOLDERS if f.name != "base" and f.name != "redis" and f.name != "worker"]


def ids(folders: list[Path]) -> list[str]:
    return [str(f.relative_to(K8S)) for f in folders]


@cache
def keda_schema(kind: str) -> dict[str, Any]:
    path = SCHEMAS / f"{KEDA_KINDS[kind]}.schema.json"
    if not path.is_file():
        pytest.skip(f"KEDA's CRD schema {path.name} not found in {SCHEMAS}: set DISPATCHER_KEDA_SCHEMAS to its folder")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def flag(args: list[str], name: str) -> str:
    """The value after ``name`` in a container's args."""
    return args[args.index(name) + 1]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def workers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in of_kind(objects, "Deployment")
        if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
    ]


def test_every_overlay_is_found() -> None:
    assert {"base", "worker", "overlays/echo", "overlays/sleep", "redis", "fleet", "cluster", "tenants/acme"} <= set(
        ids(FOLDERS)
    )


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_built_objects_validate(folder: Path) -> None:
    objects = build(folder)
    assert objects
    for obj in objects:
        if obj["kind"] in KEDA_KINDS:
            jsonschema.validate(obj, keda_schema(obj["kind"]))
            for trigger in obj["spec"].get("triggers", []):
                assert set(trigger["metadata"]) <= STREAMS_KEYS, f"unknown trigger keys in {obj['metadata']['name']}"
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_a_bad_object_is_refused() -> None:
    """The validators do refuse: a misspelt field and a KEDA trigger without its type both fail."""
    (deployment,) = workers(build(K8S / "overlays" / "echo"))
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 35
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    (scaled,) = of_kind(build(K8S / "overlays" / "echo"), "ScaledObject")
    broken = json.loads(json.dumps(scaled))
    del broken["spec"]["triggers"][0]["type"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, keda_schema("ScaledObject"))


@pytest.mark.parametrize("folder", WORKER_FOLDERS, ids=ids(WORKER_FOLDERS))
def test_scaled_object_reads_the_workers_stream(folder: Path) -> None:
    """Each trigger's stream and group are what the key module builds for the capability and prefix the worker
    serves, and pendingEntriesCount is the worker's concurrency (the most a pod's PEL ever holds)."""
    objects = build(folder)
    deployments = {d["metadata"]["name"]: d for d in workers(objects)}
    scaled = of_kind(objects, "ScaledObject")
    assert deployments and len(scaled) == len(deployments)
    auths = {a["metadata"]["name"] for a in of_kind(objects, "TriggerAuthentication")}
    for so in scaled:
        deployment = deployments[so["spec"]["scaleTargetRef"]["name"]]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        prefix = env_of(container).get("DISPATCHER_PREFIX", Settings().prefix)
        keys = KeySpace(prefix).capability(flag(container["args"], "--capability"))
        triggers = so["spec"]["triggers"]
        assert {t["type"] for t in triggers} <= {"redis-streams", "redis-cluster-streams"}
        assert [t["metadata"]["stream"] for t in triggers] == [keys.stream, keys.stream]
        assert [t["metadata"]["consumerGroup"] for t in triggers] == [GROUP, GROUP]
        lag, pending = triggers
        assert lag["metadata"]["activationLagCount"] == "0" and int(lag["metadata"]["lagCount"]) > 0
        assert pending["metadata"]["pendingEntriesCount"] == flag(container["args"], "--concurrency")
        assert {t["authenticationRef"]["name"] for t in triggers} <= auths


@pytest.mark.parametrize("folder", WORKER_FOLDERS, ids=ids(WORKER_FOLDERS))
def test_workers_stop_within_their_grace(folder: Path) -> None:
    """terminationGracePeriodSeconds is above the worker's grace, and KEDA removes pods no faster than that."""
    objects = build(folder)
    for deployment in workers(objects):
        pod = deployment["spec"]["template"]["spec"]
        grace_s = float(env_of(pod["containers"][0]).get("DISPATCHER_GRACE_S", Settings().grace_s))
        assert pod["terminationGracePeriodSeconds"] >= grace_s + 5
    for so in of_kind(objects, "ScaledObject"):
        target = next(d for d in workers(objects) if d["metadata"]["name"] == so["spec"]["scaleTargetRef"]["name"])
        grace = target["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        for policy in so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"]:
            assert policy["type"] == "Pods" and policy["periodSeconds"] >= grace


def test_fleet_pods_are_restricted_and_probed() -> None:
    objects = build(K8S / "fleet")
    deployments = of_kind(objects, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"worker-echo", "worker-sleep", "reaper", "exporter"}
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            assert c["resources"]["requests"] and c["resources"]["limits"]
            secret_refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e]
            assert secret_refs == ["dispatcher-redis"], "the Redis URL comes from the Secret"
            if d["metadata"]["name"] != "reaper":
                assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert len(of_kind(objects, "PodDisruptionBudget")) == 2
    assert {n["metadata"]["name"] for n in of_kind(objects, "NetworkPolicy")} >= {"redis-clients", "prometheus-scrape"}
    (service,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "exporter"]
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_one_reaper_never_scaled() -> None:
    """With every worker at zero the reaper alone moves due retries onto the streams: one replica, no autoscaler."""
    objects = build(K8S / "fleet")
    (reaper,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "reaper"]
    assert reaper["spec"]["replicas"] == 1
    assert reaper["spec"]["template"]["spec"]["containers"][0]["args"] == ["dispatcher", "reaper"]
    targets = {so["spec"]["scaleTargetRef"]["name"] for so in of_kind(objects, "ScaledObject")}
    targets |= {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert "reaper" not in targets
    assert all(so["spec"]["minReplicaCount"] == 0 for so in of_kind(objects, "ScaledObject"))


def test_redis_keeps_what_it_acknowledged() -> None:
    objects = build(K8S / "redis")
    (config,) = of_kind(objects, "ConfigMap")
    settings = dict(line.split(None, 1) for line in config["data"]["redis.conf"].splitlines() if line[:1].isalnum())
    assert settings["appendonly"] == "yes" and settings["appendfsync"] == "everysec"
    assert settings["maxmemory-policy"] == "noeviction" and settings["maxmemory"] == "1gb"
    (sts,) = of_kind(objects, "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"]


def test_tenant_namespace_is_bounded() -> None:
    objects = build(K8S / "tenants" / "acme")
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"tenant-acme"}
    assert of_kind(objects, "ResourceQuota") and of_kind(objects, "LimitRange")
