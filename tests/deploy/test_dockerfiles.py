"""The two images' Dockerfiles, read statically (no Docker engine is needed): multi-stage,
non-root, sources inside the build context, settings that exist, and for the CUDA image the
CUDA/cuDNN wheels that the locked onnxruntime-gpu asks for."""

from __future__ import annotations

import fnmatch
import json
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import (
    DEPLOY,
    REPO_ROOT,
    check_worker_environment,
    dockerfile_args,
    dockerfile_env,
    dockerfile_stages,
)

DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "cuda": DEPLOY / "Dockerfile.cuda"}
CUDA_LOCK = DEPLOY / "requirements-cuda.lock"


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repository) out of the build context."""
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes
        ):
            excluded = not negate
    return excluded


def lock_pins(path: Path) -> dict[str, str]:
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", path.read_text(), re.MULTILINE)
    }


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_multi_stage_and_non_root(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    stages = dockerfile_stages(path)[1:]
    assert len(stages) >= 2
    names = [re.search(r"\bAS\s+(\w+)", s[0][1], re.IGNORECASE) for s in stages]
    runtime = stages[-1]
    copies_from = [re.search(r"--from=(\w+)", a) for k, a in runtime if k == "COPY"]
    assert copies_from and all(copies_from), "the runtime stage only copies from the build stage"
    assert {m.group(1) for m in copies_from if m} <= {n.group(1) for n in names[:-1] if n}
    # the runtime stage gets the built virtualenv only: no sources, no compilers
    assert [a.split()[-2:] for k, a in runtime if k == "COPY"] == [["/opt/venv", "/opt/venv"]]
    users = [a for k, a in runtime if k == "USER"]
    assert len(users) == 1
    args = dockerfile_args(path)
    uid, gid = (re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[0])).split(":")
    assert int(uid) > 0 and int(gid) > 0
    assert [k for k, _ in runtime].index("USER") > max(i for i, (k, _) in enumerate(runtime) if k == "RUN")


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_sources_are_in_the_build_context(flavour: str) -> None:
    for stage in dockerfile_stages(DOCKERFILES[flavour])[1:]:
        for keyword, arguments in stage:
            if keyword != "COPY" or "--from=" in arguments:
                continue
            for source in arguments.split()[:-1]:
                matches = list(REPO_ROOT.glob(source.rstrip("/")))
                assert matches, f"{source} does not exist"
                for match in matches:
                    relative = str(match.relative_to(REPO_ROOT))
                    assert not ignored(relative), f"{relative} is excluded by .dockerignore"


def test_dockerignore_reader() -> None:
    assert ignored("tests/unit/test_config.py") and ignored(".venv") and ignored("worker/__pycache__/x.pyc")
    assert not ignored("worker/config.py") and not ignored("deploy/requirements-cuda.lock")


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_runtime_settings(flavour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCKERFILES[flavour]
    runtime = dockerfile_stages(path)[-1]
    env = dockerfile_env(runtime)
    settings = check_worker_environment(env, monkeypatch)
    assert settings.web.host == "0.0.0.0"  # noqa: S104 - reachable through a published port
    assert [a for k, a in runtime if k == "EXPOSE"] == [str(settings.web.port)]
    assert settings.model.device == {"cpu": "cpu", "cuda": "cuda"}[flavour]
    keywords = dict(runtime)
    assert json.loads(keywords["ENTRYPOINT"]) == ["guardstream"] and json.loads(keywords["CMD"]) == ["worker"]
    assert "/health/ready" in keywords["HEALTHCHECK"]


def test_cpu_image_drops_only_the_gpu_providers() -> None:
    runs = " ".join(a for k, a in dockerfile_stages(DOCKERFILES["cpu"])[1] if k == "RUN")
    removed = set(re.findall(r"libonnxruntime_providers_(\w+)\.so", runs))
    assert removed == {"cuda", "tensorrt"}


def test_cuda_lock_covers_onnxruntime_gpu_extras() -> None:
    worker_lock = lock_pins(REPO_ROOT / "requirements" / "worker.lock")
    assert worker_lock["onnxruntime-gpu"] == metadata.version("onnxruntime-gpu")
    cuda_lock = lock_pins(CUDA_LOCK)
    assert all(name.startswith("nvidia-") for name in cuda_lock), "the rest comes from worker.lock"
    blocks = re.split(r"\n(?=[a-z])", CUDA_LOCK.read_text().split("\n", 1)[1])
    assert all("--hash=sha256:" in b for b in blocks if re.match(r"[a-z]", b))
    wanted = [
        Requirement(r)
        for r in metadata.requires("onnxruntime-gpu") or []
        if re.search(r"extra\s*==\s*['\"](cuda|cudnn)['\"]", r)
    ]
    assert len(wanted) >= 4
    for requirement in wanted:
        pinned = cuda_lock.get(canonicalize_name(requirement.name))
        assert pinned, f"{requirement.name} is not in {CUDA_LOCK.name}"
        assert requirement.specifier.contains(pinned), f"{requirement} but the lock has {pinned}"


def test_cuda_image_library_path_matches_the_wheels() -> None:
    from onnxruntime.capi import build_and_package_info

    cuda_major = str(build_and_package_info.cuda_version).split(".")[0]
    path = DOCKERFILES["cuda"]
    env = dockerfile_env(dockerfile_stages(path)[-1])
    python = re.search(r"python:(\d+\.\d+)", dockerfile_args(path)["PYTHON_IMAGE"])
    assert python
    site = f"/opt/venv/lib/python{python.group(1)}/site-packages/nvidia"
    assert env["LD_LIBRARY_PATH"].split(":") == [f"{site}/cu{cuda_major}/lib", f"{site}/cudnn/lib"]
    assert "compute" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    copies = [a for k, a in dockerfile_stages(path)[1] if k == "COPY"]
    assert f"{CUDA_LOCK.relative_to(REPO_ROOT)} requirements/cuda.lock" in copies
