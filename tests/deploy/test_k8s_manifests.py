"""The Kubernetes manifests: they render with kustomize, validate against the Kubernetes and CRD
schemas, and say what the worker needs (probes, drain time, static membership, settings)."""

from __future__ import annotations

import copy
import json
import re
import shutil
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
    render,
    render_combination,
    secret_references,
    secret_settings,
    settings_field,
)
from worker.app import DRAIN_TIMEOUT_S
from worker.config import Settings

Objects = list[dict[str, Any]]
POD_NAME = "guardstream-0"
COMPONENTS = K8S / "components"
GUIDE = DEPLOY / "README.md"
#: Settings that are credentials: the SecretStr ones, and the SASL user name that goes with its
#: password. They must come from Secrets, never from a ConfigMap or a literal value.
CREDENTIALS = secret_settings() | {"GUARDSTREAM_KAFKA__SASL_USERNAME"}
#: The worker's SASL mechanisms in the names of KEDA's Kafka scaler (its `sasl` parameter).
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}

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
    overlays: dict[str, Objects], base: Objects, secured: Objects, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Objects]:
    """Every way the files combine: the two overlays, the base alone, the CPU-scaled HPA variant
    (also with a secured Kafka, without KEDA), and the cpu overlay with Kafka SASL/TLS and Redis TLS."""
    hpa = render_combination(
        tmp_path_factory.mktemp("hpa") / "overlay", [K8S / "base"], [K8S / "components" / "hpa"]
    )
    hpa_secured = render_combination(
        tmp_path_factory.mktemp("hpa-secured") / "overlay",
        [K8S / "base"],
        [K8S / "components" / "hpa", COMPONENTS / "kafka-sasl-ssl", COMPONENTS / "redis-tls"],
    )
    return {
        **overlays,
        "base": base,
        "base+hpa": hpa,
        "base+hpa+secured": hpa_secured,
        "cpu+secured": secured,
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    """The cpu overlay with Kafka over SASL_SSL (workers and scaler) and Redis over TLS."""
    return render_combination(
        tmp_path_factory.mktemp("secured") / "overlay",
        [K8S / "overlays" / "cpu"],
        [COMPONENTS / "kafka-sasl-ssl", COMPONENTS / "keda-kafka-sasl-ssl", COMPONENTS / "redis-tls"],
    )


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
    # "Stuck" = no new committed offset since the previous query of the scaler. With cached
    # metrics the queries are exactly pollingInterval apart, and a worker that makes progress
    # commits several times in that window.
    assert trigger["useCachedMetrics"] is True
    assert spec["pollingInterval"] >= 5 * settings.kafka.commit_interval_s
    assert "sasl" not in metadata and "tls" not in metadata and "authenticationRef" not in trigger


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
    container = worker_container(base)
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "policies"]
    assert env["GUARDSTREAM_POLICIES__PATH"] == mount["mountPath"]


def test_policies_load_from_a_configmap_volume(base: Objects, tmp_path: Path) -> None:
    """A ConfigMap volume is a directory of symlinks: each key -> ..data/key, ..data -> a
    timestamped directory holding the files. The registry must read it as the file it came from."""
    data = config_map(base, "guardstream-policies")
    volume = tmp_path / "policies"
    snapshot = volume / "..2026_11_23_10_00_00.000000001"
    snapshot.mkdir(parents=True)
    for key, text in data.items():
        (snapshot / key).write_text(text)
    (volume / "..data").symlink_to(snapshot.name)
    for key in data:
        (volume / key).symlink_to(Path("..data") / key)
    mounted = load_policies(volume)
    [(key, text)] = data.items()
    single = tmp_path / key
    single.write_text(text)
    expected = load_policies(single)
    assert [(p.id, p.version, p.threshold, p.fingerprint) for p in mounted] == [
        (p.id, p.version, p.threshold, p.fingerprint) for p in expected
    ]


def test_a_policy_change_rolls_the_pods(base: Objects, tmp_path: Path) -> None:
    """The generated ConfigMaps' names carry a hash of their content and the pod template names
    them: a changed threshold is a new pod template, which the StatefulSet rolls out."""
    edited = tmp_path / "base"
    shutil.copytree(K8S / "base", edited)
    registry = edited / "policies" / "policies.yaml"
    text = registry.read_text()
    changed = re.sub(r"threshold: [\d.]+", "threshold: 0.7", text, count=1)
    assert changed != text
    registry.write_text(changed)
    after = render(edited)

    def policies_volume(objects: Objects) -> str:
        pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v["name"] == "policies"]
        return str(volume["configMap"]["name"])

    before_name, after_name = policies_volume(base), policies_volume(after)
    assert re.fullmatch(r"guardstream-policies-[a-z0-9]{10}", before_name)
    assert before_name != after_name
    assert {o["metadata"]["name"] for o in after if o["kind"] == "ConfigMap"} >= {after_name}
    template = one(base, "StatefulSet")["spec"]["template"]
    assert template != one(after, "StatefulSet")["spec"]["template"]
    # the settings are referenced the same way
    [source] = worker_container(base)["envFrom"]
    assert re.fullmatch(r"guardstream-settings-[a-z0-9]{10}", source["configMapRef"]["name"])


# --------------------------------------------------------------------------- credentials


def test_credentials_come_only_from_secrets(variants: dict[str, Objects]) -> None:
    for name, objects in variants.items():
        for cm in (o for o in objects if o["kind"] == "ConfigMap"):
            leaked = CREDENTIALS & set(cm.get("data", {}))
            assert not leaked, f"{name}: {sorted(leaked)} in ConfigMap {cm['metadata']['name']}"
        for item in worker_container(objects).get("env", []):
            if item["name"] in CREDENTIALS:
                assert "secretKeyRef" in item.get("valueFrom", {}), f"{name}: {item['name']} is a literal"


def test_secured_kafka_and_redis(secured: Objects, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(secured, monkeypatch)
    assert settings.kafka.security_protocol == "SASL_SSL"
    env = {e["name"]: e for e in worker_container(secured)["env"]}
    assert {"GUARDSTREAM_KAFKA__SASL_USERNAME", "GUARDSTREAM_KAFKA__SASL_PASSWORD"} <= set(env)
    # the CA files the settings name are the Secret items mounted for them
    files = mounted_secret_files(secured)
    assert files[str(settings.kafka.ssl_cafile)] == ("guardstream-kafka", "ca.crt")
    assert ("guardstream-redis", "ca.crt") in files.values()
    # KEDA reads the lag with the same protocol, mechanism and credentials
    scaled = one(secured, "ScaledObject", "guardstream")
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == KEDA_SASL[settings.kafka.sasl_mechanism]
    assert trigger["metadata"]["tls"] == "enable"
    auth = one(secured, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    worker_refs = {
        name: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for name, e in env.items()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {
        "username": worker_refs["GUARDSTREAM_KAFKA__SASL_USERNAME"],
        "password": worker_refs["GUARDSTREAM_KAFKA__SASL_PASSWORD"],
        "ca": files[str(settings.kafka.ssl_cafile)],
    }


def mounted_secret_files(objects: Objects) -> dict[str, tuple[str, str]]:
    """{path in the container: (Secret, key)} for the worker's secret volumes."""
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    files = {}
    for mount in worker_container(objects)["volumeMounts"]:
        secret = volumes.get(mount["name"])
        if secret is None:
            continue
        assert mount.get("readOnly") is True, mount["name"]
        for item in secret["items"]:
            files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


# -------------------------------------------------------------------------------- guide


def guide_commands() -> list[str]:
    """The shell commands of the guide's code blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    return [c.strip() for block in blocks for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_the_guide_creates_the_secrets_the_manifests_read(
    variants: dict[str, Objects], secured: Objects
) -> None:
    created: set[tuple[str, str]] = set()
    for command in guide_commands():
        found = re.search(r"create secret generic (\S+)(.*)", command)
        if found:
            keys = re.findall(r"--from-(?:literal|file)=([\w.-]+)=", found.group(2))
            created |= {(found.group(1), key) for key in keys}
    read = set().union(*(secret_references(objects) for objects in variants.values()))
    assert read - created == set(), "the manifests read Secret keys the guide never creates"
    assert created - read == set(), "the guide creates Secret keys nothing reads"
    # the Redis URL of the TLS example points at the CA file the redis-tls component mounts
    urls = [u for c in guide_commands() for u in re.findall(r"url='(rediss://[^']+)'", c)]
    [ca_path] = [re.search(r"ssl_ca_certs=([^&']+)", u).group(1) for u in urls]  # type: ignore[union-attr]
    assert mounted_secret_files(secured)[ca_path] == ("guardstream-redis", "ca.crt")


def test_the_guide_names_real_kustomizations() -> None:
    text = GUIDE.read_text()
    directories = re.findall(r"(?:apply -k|kubectl kustomize|kustomize build)\s+(deploy/[\w./-]*\w)", text)
    assert directories
    for directory in directories:
        assert (REPO_ROOT / directory / "kustomization.yaml").is_file(), directory
    components = set(re.findall(r"(?:\.\./\.\./)?components/([\w-]+)", text))
    assert {"keda", "hpa", "kafka-sasl-ssl", "keda-kafka-sasl-ssl", "redis-tls"} <= components
    for component in components:
        assert (COMPONENTS / component / "kustomization.yaml").is_file(), component


def test_every_setting_the_deployment_files_name_exists() -> None:
    """Comments and the guide name settings too (GUARDSTREAM_BATCHING__PIPELINE_DEPTH, ...): a
    renamed setting must not survive there. deploy/local's scripts have variables of their own."""
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and "local" not in p.relative_to(DEPLOY).parts]
    files.append(REPO_ROOT / "docker-compose.yml")
    unknown = {
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in files
        if not path.name.endswith(".lock")
        for name in re.findall(r"\bGUARDSTREAM_[A-Z][A-Z0-9_]*", path.read_text())
        if settings_field(name) is None
    }
    assert not unknown, sorted(unknown)
