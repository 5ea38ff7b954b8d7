"""Shared tools of the deployment tests: rendering kustomize, schema validation, settings checks."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv
from pydantic import BaseModel, SecretStr
from referencing import Registry, Resource

from worker.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
MONITORING = DEPLOY / "monitoring"
LOCAL = REPO_ROOT / ".local"
#: CRDs and the Compose schema, put there by deploy/local/install.sh.
SCHEMAS = LOCAL / "schemas"

#: Kubernetes versions the manifests are validated against: the oldest one the guide supports
#: and the newest one kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29", "1.37")

#: The custom resources, by apiVersion and kind: the CRD file (from install.sh) and the version.
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}

#: Where kubernetes-validate's schemas keep the shared definitions (their $id).
_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"

_INSTALL_HINT = "run `make install` (deploy/local/install.sh builds it with Go 1.24+)"


# ------------------------------------------------------------------------------ kustomize


def kustomize_bin() -> str:
    local = LOCAL / "bin" / "kustomize"
    if local.is_file():
        return str(local)
    found = shutil.which("kustomize")
    if found:
        return found
    pytest.fail(f"kustomize not found in .local/bin or on PATH: {_INSTALL_HINT}")


def render(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build directory`, as a list of objects."""
    result = subprocess.run(
        [kustomize_bin(), "build", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kustomize build {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_combination(
    workdir: Path, resources: Iterable[Path], components: Iterable[Path] = ()
) -> list[dict[str, Any]]:
    """Render a throw-away kustomization in `workdir` made of these resources and components."""
    workdir.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(r, workdir) for r in resources],
        "components": [os.path.relpath(c, workdir) for c in components],
    }
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(workdir)


def one(objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of this kind (and name)."""
    found = [
        dict(o) for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def config_map(objects: Iterable[Mapping[str, Any]], name: str) -> dict[str, str]:
    """Data of the generated ConfigMap `name` (kustomize adds a hash suffix to the name)."""
    found = [
        o
        for o in objects
        if o["kind"] == "ConfigMap"
        and (o["metadata"]["name"] == name or re.fullmatch(rf"{name}-[a-z0-9]{{10}}", o["metadata"]["name"]))
    ]
    assert len(found) == 1, f"expected one ConfigMap {name}, found {len(found)}"
    return dict(found[0].get("data", {}))


# ----------------------------------------------------------------------- schema validation


class KubernetesSchemas:
    """Strict validators for built-in kinds (kubernetes-validate's schemas) and for the CRDs."""

    def __init__(self, version: str) -> None:
        self.version = version
        schema_version = [v for v in kv.all_versions() if kv.major_minor(v) == version]
        assert schema_version, f"kubernetes-validate has no schemas for {version}"
        self._dir = f"kubernetes-json-schema/v{schema_version[-1]}-local-strict"
        definitions = kv.schema_contents(f"{self._dir}/_definitions.json", version)
        self._registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
        self._object_meta = {"$ref": f"{_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}

    @functools.cache  # noqa: B019 - a handful of instances, alive for the session
    def _builtin(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        try:
            schema = kv.schema_contents(f"{self._dir}/{kind.lower()}-{group_version}.json", self.version)
        except FileNotFoundError:
            return None
        registry = Resource.from_contents(schema) @ self._registry
        return jsonschema.Draft202012Validator(schema, registry=registry)

    @functools.cache  # noqa: B019
    def _crd(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        filename = CRD_FILES.get((api_version, kind))
        if filename is None:
            return None
        schema = crd_schema(filename, api_version.split("/")[1])
        schema["properties"]["metadata"] = self._object_meta
        return jsonschema.Draft202012Validator(schema, registry=self._registry)

    def validator(self, obj: Mapping[str, Any]) -> jsonschema.protocols.Validator:
        api_version, kind = obj["apiVersion"], obj["kind"]
        validator = self._builtin(api_version, kind) or self._crd(api_version, kind)
        assert validator is not None, f"no schema for {api_version} {kind}"
        return validator

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        """Every schema violation of `obj`, as 'path: message' lines."""
        return [
            f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in self.validator(obj).iter_errors(obj)
        ]


def crd_file(filename: str) -> Path:
    """The CRD file install.sh put in .local/schemas."""
    path = SCHEMAS / filename
    if not path.is_file():
        pytest.fail(f"{path} is missing: {_INSTALL_HINT}")
    return path


@functools.cache
def _crd_document(filename: str) -> dict[str, Any]:
    return dict(yaml.safe_load(crd_file(filename).read_text()))


def crd_schema(filename: str, version: str) -> dict[str, Any]:
    """The CRD's openAPIV3Schema for `version` as a strict JSON schema (a new object)."""
    versions = {v["name"]: v for v in _crd_document(filename)["spec"]["versions"]}
    return dict(_strict(versions[version]["schema"]["openAPIV3Schema"]))


def _strict(node: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON schema that, like `kubectl apply --validate=strict`,
    rejects fields the CRD does not declare (unless it preserves unknown fields)."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _strict(value) for key, value in node.items()}
    if node.get("x-kubernetes-int-or-string") and "type" not in node:
        node["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


@functools.cache
def kubernetes_schemas(version: str) -> KubernetesSchemas:
    return KubernetesSchemas(version)


# ------------------------------------------------------------------------------- settings

ENV_PREFIX = "GUARDSTREAM_"


def settings_field(variable: str) -> tuple[str, ...] | None:
    """The Settings field a GUARDSTREAM_* variable sets, or None when it sets nothing.

    pydantic-settings silently ignores unknown top-level variables (GUARDSTREAM_LOGLEVEL), so a
    typo would go unnoticed in a manifest: every variable must name a real field.
    """
    if not variable.startswith(ENV_PREFIX):
        return None
    parts = variable[len(ENV_PREFIX) :].lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if i == len(parts) - 1:
            return tuple(parts)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return None


def check_worker_environment(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every GUARDSTREAM_* variable names a setting, and together they make valid Settings."""
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and settings_field(name) is None)
    assert not unknown, f"variables that set no worker setting: {unknown}"
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def container_env(
    objects: Iterable[Mapping[str, Any]], container: Mapping[str, Any], pod_name: str = "guardstream-0"
) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps, then env (valueFrom resolved to
    stand-ins: the pod name for metadata.name, a plausible value for Secret keys)."""
    objects = list(objects)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        data = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref]
        assert data, f"envFrom names ConfigMap {ref}, which is not rendered"
        env.update(data[0].get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = "redis://:secret@redis:6379/0"
        else:
            raise AssertionError(f"unhandled env source {item}")
    return env


def secret_references(objects: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(Secret, key) pairs the objects read: secretKeyRef variables, secret volumes' items and
    KEDA TriggerAuthentications."""
    found: set[tuple[str, str]] = set()
    for obj in objects:
        if obj["kind"] == "TriggerAuthentication":
            found |= {(ref["name"], ref["key"]) for ref in obj["spec"].get("secretTargetRef", [])}
        if obj["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod = obj["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.add((ref["name"], ref["key"]))
        for volume in pod.get("volumes", []):
            secret = volume.get("secret")
            if secret:
                assert secret.get("items"), f"volume {volume['name']} mounts every key of its Secret"
                found |= {(secret["secretName"], item["key"]) for item in secret["items"]}
    return found


def secret_settings(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """The GUARDSTREAM_* variables of the settings that hold secrets (SecretStr fields)."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        variable = prefix + name.upper()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= secret_settings(annotation, variable + "__")
        elif annotation is SecretStr or SecretStr in typing.get_args(annotation):
            found.add(variable)
    return found


# ---------------------------------------------------------------------------------- files


def yaml_documents(path: Path) -> Iterator[Any]:
    yield from (doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines are dropped even inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{path}: the last instruction ends with a backslash"
    return instructions


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (a new stage at every FROM); ARGs before the first FROM
    are stage 0's."""
    stages: list[list[tuple[str, str]]] = [[]]
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, arguments))
    return stages


def stage_name(stage: list[tuple[str, str]]) -> str | None:
    """The `AS name` of a stage (its first instruction is the FROM)."""
    found = re.search(r"\bAS\s+([\w.-]+)\s*$", stage[0][1], re.IGNORECASE)
    return found.group(1) if found else None


def stage_parent(stage: list[tuple[str, str]]) -> str:
    """What a stage is built FROM: an image, or an earlier stage's name."""
    return stage[0][1].split()[0]


def dockerfile_image(path: Path, target: str | None = None) -> list[tuple[str, str]]:
    """The instructions that make the image of `target` (default: the last stage, what a build
    without --target produces): the stages it is built FROM, in order, then its own."""
    stages = dockerfile_stages(path)[1:]
    named = {stage_name(stage): stage for stage in stages if stage_name(stage)}
    stage = named[target] if target is not None else stages[-1]
    chain = [stage]
    while stage_parent(stage) in named:
        stage = named[stage_parent(stage)]
        chain.insert(0, stage)
    return [instruction for stage in chain for instruction in stage]


def dockerfile_args(path: Path) -> dict[str, str]:
    """ARG defaults (the last one wins when an ARG is declared again)."""
    args: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            args[name] = value
    return args


def dockerfile_env(stage: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ENV of a stage (the `ENV a=b c=d` form)."""
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for item in arguments.split():
                name, _, value = item.partition("=")
                env[name] = value
    return env
