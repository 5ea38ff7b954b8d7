"""docker-compose.yml: valid Compose, every name it uses exists, the worker's variables are real
settings, and the loadtest / monitoring profiles are wired to the services they talk to."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from tests.deploy.helpers import (
    MONITORING,
    REPO_ROOT,
    SCHEMAS,
    check_worker_environment,
    dockerfile_env,
    dockerfile_image,
)
from worker.app import DRAIN_TIMEOUT_S

COMPOSE = REPO_ROOT / "docker-compose.yml"
PROFILES = {"loadtest", "monitoring"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """{dependency: condition}, from the list or the mapping form."""
    value = service.get("depends_on", {})
    if isinstance(value, list):
        return dict.fromkeys(value, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in value.items()}


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes in the long form: {type, source, target}."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append(volume)
            continue
        source, target, *_ = volume.split(":")
        kind = "bind" if source.startswith((".", "/")) else "volume"
        found.append({"type": kind, "source": source, "target": target})
    return found


def bind_source(service: dict[str, Any], target: str) -> Path:
    [mount] = [m for m in mounts(service) if m["target"] == target]
    assert mount["type"] == "bind"
    return (COMPOSE.parent / str(mount["source"])).resolve()


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    path = SCHEMAS / "compose-spec.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make install` (deploy/local/install.sh)")
    schema = json.loads(path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_every_name_it_uses_exists(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    volumes = set(compose.get("volumes", {}))
    used_profiles: set[str] = set()
    for name, service in services.items():
        profiles = set(service.get("profiles", []))
        assert profiles <= PROFILES, name
        used_profiles |= profiles
        for dependency in depends_on(service):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            # a default service must not need an optional one (it would not start without it)
            if not profiles:
                assert not services[dependency].get("profiles"), f"{name} -> {dependency}"
        if "build" in service:
            context = COMPOSE.parent / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for mount in mounts(service):
            if mount["type"] == "volume":
                assert mount["source"] in volumes, f"{name}: undeclared volume {mount['source']}"
            elif mount["type"] == "bind":
                assert (COMPOSE.parent / mount["source"]).exists(), f"{name}: {mount['source']}"
    assert used_profiles == PROFILES


def test_images_are_pinned_and_builds_agree(services: dict[str, dict[str, Any]]) -> None:
    builds: dict[str, Any] = {}
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert builds.setdefault(image, service["build"]) == service["build"], name
        else:
            assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), name


def guardstream_services(services: dict[str, dict[str, Any]]) -> list[str]:
    return [
        name for name, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    ]


def image_of(service: dict[str, Any]) -> list[tuple[str, str]]:
    """The Dockerfile instructions of the image a service builds (its target, or the default)."""
    build = service["build"]
    return dockerfile_image(COMPOSE.parent / build["context"] / build["dockerfile"], build.get("target"))


def test_worker_variables_are_real_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = guardstream_services(services)
    assert set(names) == {"worker", "loadtest"}
    for name in names:
        image_env = dockerfile_env(image_of(services[name]))
        env = {**image_env, **{k: str(v) for k, v in services[name]["environment"].items()}}
        settings = check_worker_environment(env, monkeypatch)
        assert settings.kafka.bootstrap_servers == "kafka:9092", name
    worker = check_worker_environment(
        {**dockerfile_env(image_of(services["worker"])), **services["worker"]["environment"]}, monkeypatch
    )
    assert urlparse(worker.redis.url.get_secret_value()).hostname in services
    # the ONNX cache the worker writes is the volume mounted for it
    volumes = {m["target"]: m for m in mounts(services["worker"])}
    assert volumes[str(worker.model.cache_dir)]["type"] == "volume"
    # no other service is handed worker settings (they would be checked by nothing)
    others = {
        name: variable
        for name, service in services.items()
        for variable in service.get("environment", {})
        if variable.startswith("GUARDSTREAM") and name not in names
    }
    assert not others


def test_kafka_advertises_the_address_the_workers_use(services: dict[str, dict[str, Any]]) -> None:
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "//kafka:9092" in advertised


def test_worker_drains_and_reports_health(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert seconds(worker["stop_grace_period"]) > DRAIN_TIMEOUT_S
    port = worker["environment"]["GUARDSTREAM_WEB__PORT"]
    assert f"127.0.0.1:{port}/health/ready" in " ".join(worker["healthcheck"]["test"])
    assert worker["command"] == ["worker"]


def kafka_init_topics(services: dict[str, dict[str, Any]]) -> set[str]:
    """The topics the one-shot kafka-init service creates."""
    script = "\n".join(services["kafka-init"]["command"])
    return set(re.findall(r"^\s*create\s+(\S+)\s", script, re.MULTILINE))


def test_loadtest_profile(services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The load generator runs `guardstream loadtest` against the stack's own worker(s): flags
    its parser accepts, the topics kafka-init creates and the worker reads, a writable report
    volume, and an image that has the generator's packages."""
    from loadtest.loadgen import build_parser

    loadtest = services["loadtest"]
    assert loadtest["build"]["target"] == "loadtest" and loadtest["image"] != services["worker"]["image"]
    assert loadtest["entrypoint"] == ["guardstream"] and loadtest["command"][0] == "loadtest"
    args = build_parser().parse_args([str(a) for a in loadtest["command"][1:]])
    assert args.no_worker, "the generator targets the compose workers instead of starting its own"
    assert depends_on(loadtest) == {"worker": "service_healthy"}

    env = {**dockerfile_env(image_of(loadtest)), **loadtest["environment"]}
    settings = check_worker_environment(env, monkeypatch)
    worker = check_worker_environment(
        {**dockerfile_env(image_of(services["worker"])), **services["worker"]["environment"]}, monkeypatch
    )
    topics = (settings.kafka.input_topic, settings.kafka.verdicts_topic, settings.kafka.dlq_topic)
    assert topics == (worker.kafka.input_topic, worker.kafka.verdicts_topic, worker.kafka.dlq_topic)
    assert set(topics) == kafka_init_topics(services)

    # reports go to a named volume; the image creates that directory, so the volume starts out
    # owned by the image's unprivileged user
    [report_mount] = [m for m in mounts(loadtest) if m["type"] == "volume"]
    assert str(args.out) == report_mount["target"]
    runs = " ".join(a for k, a in image_of(loadtest) if k == "RUN")
    assert re.search(rf"chown\s+\S+\s+[^&]*{re.escape(report_mount['target'])}(\s|$)", runs)


def test_worker_ports_allow_scaling(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose up --scale worker=N` needs a host port range, one port per replica, up to
    the partitions kafka-init gives the prompts topic."""
    [published] = services["worker"]["ports"]
    found = re.fullmatch(r"127\.0\.0\.1:(\d+)-(\d+):(\d+)", published)
    assert found, published
    first, last, container = (int(g) for g in found.groups())
    assert str(container) == services["worker"]["environment"]["GUARDSTREAM_WEB__PORT"]
    partitions = int(services["kafka-init"]["environment"]["PROMPTS_PARTITIONS"])
    assert last - first + 1 == partitions


def test_monitoring_profile_is_wired(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    config = yaml.safe_load(bind_source(prometheus, config_path).read_text())
    assert bind_source(prometheus, config_path) == MONITORING / "prometheus.yml"
    for rule_file in config["rule_files"]:
        assert bind_source(prometheus, rule_file) == MONITORING / "alerts.yml"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    [dns] = jobs["guardstream"]["dns_sd_configs"]
    assert dns["names"] == ["worker"]
    assert str(dns["port"]) == services["worker"]["environment"]["GUARDSTREAM_WEB__PORT"]
    [exporter] = jobs["kafka-exporter"]["static_configs"][0]["targets"]
    assert exporter.split(":")[0] in services
    assert "--kafka.server=kafka:9092" in services["kafka-exporter"]["command"]

    grafana = services["grafana"]
    provisioning = bind_source(grafana, "/etc/grafana/provisioning")
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    url = urlparse(datasource["datasources"][0]["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert any(p.endswith(":9090") for p in prometheus["ports"])
    provider = yaml.safe_load((provisioning / "dashboards" / "guardstream.yml").read_text())
    dashboards_in_container = provider["providers"][0]["options"]["path"]
    assert (bind_source(grafana, dashboards_in_container) / "guardstream.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in_container}/guardstream.json"
