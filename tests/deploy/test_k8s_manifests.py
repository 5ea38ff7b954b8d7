"""The Kubernetes manifests: they render with kustomize, validate against the Kubernetes and CRD
schemas, and say what the worker needs (probes, drain time, static membership, settings)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.policies import DEFAULT_POLICY_DIR, load_policies
from tests.deploy.conftest import OVERLAYS
from tests.deploy.helpers import (
    DEPLOY,
    K8S,
    KUBERNETES_VERSIONS,
    MONITORING,
    REPO_ROOT,
    check_worker_environment,
    config_map,
    container_env,
    dockerfile_args,
    dockerfile_instructions,
    kubernetes_schemas,
    one,
    render_combination,
)
from worker.app import DRAIN_TIMEOUT_S
from worker.config import Settings

Objects = list[dict[str, Any]]
POD_NAME = "guardstream-0"

#: Parameters of KEDA's kafka scaler (trigger metadata), from its documentation.
KEDA_KAFKA_PARAMETERS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "scaleToZeroOnInvalidOffset",
    "partitionLimitation",
    "version",
    "sasl",
    "tls",
    "unsafeSsl",
}


def worker_container(objects: Objects) -> dict[str, Any]:
    statefulset = one(objects, "StatefulSet", "guardstream")
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    return dict(containers[0])


def pod_labels(objects: Objects) -> dict[str, str]:
    return dict(one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"])


def settings_of(objects: Objects, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return check_worker_environment(container_env(objects, worker_container(objects), POD_NAME), monkeypatch)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


@pytest.fixture(scope="module")
def variants(
    overlays: dict[str, Objects], base: Objects, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Objects]:
    """Every way the files combine: the two overlays, the base alone, the CPU-scaled HPA variant."""
    hpa = render_combination(
        tmp_path_factory.mktemp("hpa") / "overlay", [K8S / "base"], [K8S / "components" / "hpa"]
    )
    return {**overlays, "base": base, "base+hpa": hpa}


# ------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates(variants: dict[str, Objects], version: str) -> None:
    schemas = kubernetes_schemas(version)
    problems = [
        f"{name}: {obj['kind']}/{obj['metadata']['name']}: {error}"
        for name, objects in variants.items()
        for obj in objects
        for error in schemas.errors(obj)
    ]
    assert not problems, "\n".join(problems)


def test_the_validation_is_strict(overlays: dict[str, Objects]) -> None:
    """A misspelt field fails, in built-in kinds and in custom resources alike."""
    schemas = kubernetes_schemas(KUBERNETES_VERSIONS[0])
    statefulset = copy.deepcopy(one(overlays["gpu"], "StatefulSet"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    scaled = copy.deepcopy(one(overlays["gpu"], "ScaledObject"))
    scaled["spec"]["maxReplicas"] = 3
    scaled["metadata"]["lables"] = {}
    monitor = copy.deepcopy(one(overlays["gpu"], "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    assert schemas.errors(statefulset) and schemas.errors(monitor)
    assert len(schemas.errors(scaled)) == 2


def test_every_manifest_file_is_used() -> None:
    """A file that no kustomization names would never be rendered, so never validated."""
    named: set[Path] = set()
    roots = [p.parent for p in K8S.rglob("kustomization.yaml")] + [MONITORING]
    for root in roots:
        kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
        entries = [*kustomization.get("resources", []), *kustomization.get("components", [])]
        entries += [p["path"] for p in kustomization.get("patches", []) if "path" in p]
        for generator in kustomization.get("configMapGenerator", []):
            entries += [f.split("=")[-1] for f in generator.get("files", [])]
        named |= {(root / entry).resolve() for entry in entries}
    manifests = {p.resolve() for p in K8S.rglob("*.y*ml") if p.name != "kustomization.yaml"}
    manifests |= {
        MONITORING / "servicemonitor.yaml",
        MONITORING / "prometheusrule.yaml",
        MONITORING / "grafana" / "dashboards" / "guardstream.json",
    }
    assert not {str(p.relative_to(REPO_ROOT)) for p in manifests - named}
    assert not [str(p.relative_to(REPO_ROOT)) for p in named if not p.exists()]


# ---------------------------------------------------------------------------- workload


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_are_a_statefulset_with_stable_names(overlays: dict[str, Objects], overlay: str) -> None:
    objects = overlays[overlay]
    statefulset = one(objects, "StatefulSet", "guardstream")
    service = one(objects, "Service", statefulset["spec"]["serviceName"])
    labels = pod_labels(objects)
    assert service["spec"]["clusterIP"] == "None"
    assert selects(service["spec"]["selector"], labels)
    assert selects(statefulset["spec"]["selector"], labels)
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert {o["metadata"]["namespace"] for o in objects} == {"guardstream"}
    env = {e["name"]: e for e in worker_container(objects)["env"]}
    # Static membership: the group instance id is the pod name, which the StatefulSet keeps.
    instance = env["GUARDSTREAM_KAFKA__GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert instance == "metadata.name"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_drain(
    overlays: dict[str, Objects], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = overlays[overlay]
    container = worker_container(objects)
    settings = settings_of(objects, monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.web.port}
    assert settings.web.host == "0.0.0.0"  # noqa: S104 - reachable by the kubelet and Prometheus
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # Kafka wait + model load
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    # The worker drains the batch in hand for up to DRAIN_TIMEOUT_S, then commits and stops.
    assert pod["terminationGracePeriodSeconds"] >= DRAIN_TIMEOUT_S + 15
    service = one(objects, "Service", "guardstream")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", settings.web.port)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_and_writable_paths(
    overlays: dict[str, Objects], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = overlays[overlay]
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    container = worker_container(objects)
    security = container["securityContext"]
    image_uid = int(dockerfile_args(DEPLOY / "Dockerfile")["APP_UID"])
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert security["runAsUser"] == pod["securityContext"]["runAsUser"] == image_uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    # With a read-only root, everything the worker writes needs an emptyDir: the ONNX cache,
    # /tmp and the working directory (the stream processor's data dir is created there).
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    workdir = [a for k, a in dockerfile_instructions(DEPLOY / "Dockerfile") if k == "WORKDIR"][-1]
    cache_dir = str(settings_of(objects, monkeypatch).model.cache_dir)
    for path in (cache_dir, "/tmp", workdir):  # noqa: S108
        assert "emptyDir" in volumes[mounts[path]["name"]], path
        assert not mounts[path].get("readOnly", False)
    policies = mounts["/etc/guardstream/policies"]
    assert policies["readOnly"] is True
    assert volumes[policies["name"]]["configMap"]["name"].startswith("guardstream-policies")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_from_configmap_and_secret(
    overlays: dict[str, Objects], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = overlays[overlay]
    settings = settings_of(objects, monkeypatch)  # every variable is a real, valid setting
    assert settings.kafka.group_instance_id == POD_NAME
    assert settings.kafka.create_topics is False
    env = {e["name"]: e for e in worker_container(objects)["env"]}
    secret = env["GUARDSTREAM_REDIS__URL"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "guardstream-redis", "key": "url"}
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        assert "GUARDSTREAM_REDIS__URL" not in cm.get("data", {}), "the Redis URL belongs in a Secret"
    assert settings.kafka.session_timeout_s >= 30  # a rolled pod returns before its session ends


def test_gpu_overlay_asks_for_one_gpu(overlays: dict[str, Objects], monkeypatch: pytest.MonkeyPatch) -> None:
    objects = overlays["gpu"]
    container = worker_container(objects)
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"]
    assert "cuda" in container["image"]
    assert settings_of(objects, monkeypatch).model.device == "cuda"


def test_cpu_overlay_threads_match_its_cores(
    overlays: dict[str, Objects], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = overlays["cpu"]
    container = worker_container(objects)
    rendered = json.dumps(objects)
    assert "nvidia.com/gpu" not in rendered and "cuda" not in container["image"]
    resources = container["resources"]
    settings = settings_of(objects, monkeypatch)
    assert settings.model.device == "cpu"
    assert (
        int(resources["requests"]["cpu"])
        == int(resources["limits"]["cpu"])
        == settings.model.intra_op_threads
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_spread_and_disruption_budget(overlays: dict[str, Objects], overlay: str) -> None:
    objects = overlays[overlay]
    resources = worker_container(objects)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    labels = pod_labels(objects)
    spread = one(objects, "StatefulSet")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(selects(c["labelSelector"], labels) for c in spread)
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert selects(budget["spec"]["selector"], labels)


# ------------------------------------------------------------------------------ scaling


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_on_the_workers_lag(
    overlays: dict[str, Objects], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = overlays[overlay]
    settings = settings_of(objects, monkeypatch)
    scaled = one(objects, "ScaledObject", "guardstream")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "guardstream"}
    # KEDA owns the replica count: a `replicas` in the manifest would reset it on every apply.
    assert "replicas" not in one(objects, "StatefulSet")["spec"]
    assert spec["minReplicaCount"] >= 1  # see the comment in the ScaledObject
    assert spec["maxReplicaCount"] == settings.kafka.partitions
    [trigger] = spec["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert set(metadata) <= KEDA_KAFKA_PARAMETERS
    assert metadata["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert metadata["consumerGroup"] == settings.kafka.group_id == "guardstream"
    assert metadata["topic"] == settings.kafka.input_topic == "prompts"
    assert metadata["offsetResetPolicy"] == settings.kafka.auto_offset_reset
    assert int(metadata["lagThreshold"]) > 0
    # The persistent-lag guard: one stuck partition cannot pin the group at the maximum.
    assert metadata["limitToPartitionsWithLag"] == "true"
    assert metadata["excludePersistentLag"] == "true"
    assert metadata.get("allowIdleConsumers", "false") == "false"  # KEDA rejects it with the above


def test_gpu_workers_take_more_lag_each(overlays: dict[str, Objects]) -> None:
    def threshold(objects: Objects) -> int:
        return int(one(objects, "ScaledObject")["spec"]["triggers"][0]["metadata"]["lagThreshold"])

    assert threshold(overlays["gpu"]) > threshold(overlays["cpu"])


def test_hpa_alternative(variants: dict[str, Objects], monkeypatch: pytest.MonkeyPatch) -> None:
    objects = variants["base+hpa"]
    hpa = one(objects, "HorizontalPodAutoscaler", "guardstream")
    settings = settings_of(objects, monkeypatch)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "guardstream",
    }
    assert hpa["spec"]["maxReplicas"] == settings.kafka.partitions
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in one(objects, "StatefulSet")["spec"]
    assert not [o for o in objects if o["kind"] == "ScaledObject"]


def test_base_alone_has_fixed_replicas(base: Objects) -> None:
    assert one(base, "StatefulSet")["spec"]["replicas"] >= 1
    assert not [o for o in base if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler", "ServiceMonitor")]


# --------------------------------------------------------------------------- monitoring


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_objects(overlays: dict[str, Objects], overlay: str) -> None:
    objects = overlays[overlay]
    service = one(objects, "Service", "guardstream")
    monitor = one(objects, "ServiceMonitor", "guardstream")
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert all(e["port"] in port_names and e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    # job = the Service's label named by jobLabel: "guardstream", as the dashboard and alerts expect
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "guardstream"
    dashboard = one(objects, "ConfigMap", "guardstream-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (MONITORING / "grafana" / "dashboards" / "guardstream.json").read_text()
    assert json.loads(dashboard["data"]["guardstream.json"]) == json.loads(shipped)
    rules = one(objects, "PrometheusRule", "guardstream")
    assert rules["spec"] == yaml.safe_load((MONITORING / "alerts.yml").read_text())


def test_policies_configmap_is_a_registry_the_packaged_model_scores(base: Objects, tmp_path: Path) -> None:
    registry = tmp_path / "policies.yaml"
    registry.write_text(config_map(base, "guardstream-policies")["policies.yaml"])
    mounted = load_policies(registry)
    model = json.loads((Settings().model.path / "config.json").read_text())
    assert set(mounted.ids) == {p["id"] for p in model["policies"]}
    starter = load_policies(DEFAULT_POLICY_DIR)
    for policy in mounted:
        shipped = starter.get(policy.id)
        assert shipped is not None
        assert (policy.fingerprint, policy.threshold) == (shipped.fingerprint, shipped.threshold)
    env = config_map(base, "guardstream-settings")
    assert env["GUARDSTREAM_POLICIES__PATH"] == "/etc/guardstream/policies"
