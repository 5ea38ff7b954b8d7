"""The images' Dockerfiles, read statically (no Docker engine is needed): multi-stage, non-root,
sources inside the build context, settings that exist, a writable ONNX cache, no training
packages; for the CUDA image the CUDA/cuDNN wheels that the locked onnxruntime-gpu asks for, for
the load generator the packages its code imports."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import (
    DEPLOY,
    REPO_ROOT,
    check_worker_environment,
    dockerfile_args,
    dockerfile_env,
    dockerfile_image,
    dockerfile_stages,
    stage_name,
    stage_parent,
)

DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "cuda": DEPLOY / "Dockerfile.cuda"}
#: Every image the Dockerfiles make: (Dockerfile, target; None = the default, last stage).
IMAGES = {
    "cpu": (DOCKERFILES["cpu"], None),
    "cuda": (DOCKERFILES["cuda"], None),
    "loadtest": (DOCKERFILES["cpu"], "loadtest"),
}
WORKER_IMAGES = ("cpu", "cuda")
WORKER_LOCK = REPO_ROOT / "requirements" / "worker.lock"
CUDA_LOCK = DEPLOY / "requirements-cuda.lock"
LOADTEST_LOCK = DEPLOY / "requirements-loadtest.lock"
#: Training and data-generation packages (pyproject's train and synth extras, and what the encoder
#: package would pull in): several GB that no image may carry.
TRAINING_PACKAGES = {
    "torch",
    "transformers",
    "sentence-transformers",
    "scikit-learn",
    "pyarrow",
    "llama-cpp-python",
}
FIRST_PARTY = {"worker", "models", "loadtest"}


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


def lock_blocks(path: Path) -> list[str]:
    """The requirement blocks of a lock (header comments dropped)."""
    return [b for b in re.split(r"\n(?=[A-Za-z0-9])", "\n" + path.read_text()) if re.match(r"[A-Za-z0-9]", b)]


def image_locks(flavour: str) -> list[Path]:
    """The lock files an image's virtualenv is installed from: the COPY sources ending in .lock
    of the stage that built the virtualenv it copies, and of that stage's own parents."""
    path, target = IMAGES[flavour]
    [copy] = [a for k, a in dockerfile_image(path, target) if k == "COPY" and "--from=" in a]
    built_by = re.search(r"--from=([\w.-]+)", copy)
    assert built_by
    sources = [a.split()[0] for k, a in dockerfile_image(path, built_by.group(1)) if k == "COPY"]
    return [REPO_ROOT / s for s in sources if s.endswith(".lock")]


def requirements_of(distribution: str) -> list[Requirement]:
    """The installed distribution's requirements that apply here, extras left out."""
    environment = {**default_environment(), "extra": ""}
    requirements = [Requirement(r) for r in metadata.requires(distribution) or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(environment)]


def third_party_imports(package: Path) -> set[str]:
    """Top-level modules a package's code imports that are neither stdlib nor this project's."""
    found: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in FIRST_PARTY}


# ------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("flavour", IMAGES)
def test_multi_stage_and_non_root(flavour: str) -> None:
    path, target = IMAGES[flavour]
    image = dockerfile_image(path, target)
    stages = {stage_name(s): s for s in dockerfile_stages(path)[1:]}
    # the image starts from the clean base image, not from a build stage
    assert image[0][0] == "FROM" and stage_parent([image[0]]) not in stages
    # it gets the built virtualenv only, from a stage that is not part of it: no sources, no compilers
    copies = [a for k, a in image if k == "COPY"]
    assert len(copies) == 1 and copies[0].split()[-2:] == ["/opt/venv", "/opt/venv"], copies
    built_by = re.search(r"--from=([\w.-]+)", copies[0])
    assert built_by and built_by.group(1) in stages
    assert all(i not in image for i in stages[built_by.group(1)])
    users = [a for k, a in image if k == "USER"]
    assert len(users) == 1
    args = dockerfile_args(path)
    uid, gid = (re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[0])).split(":")
    assert int(uid) > 0 and int(gid) > 0
    keywords = [k for k, _ in image]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_the_default_target_is_the_worker() -> None:
    """`docker build` without --target builds the last stage: it must be the worker, and the load
    generator's packages must stay in their own target."""
    last = dockerfile_stages(DOCKERFILES["cpu"])[-1]
    assert stage_name(last) == "runtime"
    assert LOADTEST_LOCK not in image_locks("cpu") and LOADTEST_LOCK in image_locks("loadtest")


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


# -------------------------------------------------------------------------------- runtime


@pytest.mark.parametrize("flavour", IMAGES)
def test_runtime_settings(flavour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path, target = IMAGES[flavour]
    image = dockerfile_image(path, target)
    env = dockerfile_env(image)
    settings = check_worker_environment(env, monkeypatch)
    assert settings.web.host == "0.0.0.0"  # noqa: S104 - reachable through a published port
    assert settings.model.device == {"cpu": "cpu", "cuda": "cuda", "loadtest": "cpu"}[flavour]
    keywords = dict(image)
    assert json.loads(keywords["ENTRYPOINT"]) == ["guardstream"]
    if flavour == "loadtest":
        assert json.loads(keywords["CMD"])[0] == "loadtest"
        return
    assert json.loads(keywords["CMD"]) == ["worker"]
    assert [a for k, a in image if k == "EXPOSE"] == [str(settings.web.port)]
    assert "/health/ready" in keywords["HEALTHCHECK"]


@pytest.mark.parametrize("flavour", WORKER_IMAGES)
def test_onnx_cache_belongs_to_the_worker_user(flavour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker builds ONNX graphs at start into model.cache_dir: the image's user must own it."""
    path, target = IMAGES[flavour]
    image = dockerfile_image(path, target)
    cache_dir = str(check_worker_environment(dockerfile_env(image), monkeypatch).model.cache_dir)
    assert cache_dir.startswith("/"), "a relative cache dir would depend on the working directory"
    runs = " ".join(a for k, a in image if k == "RUN")
    user = re.search(r'useradd\b[^&]*--uid "?\$\{(\w+)\}"?[^&]*\s(\w+)\s*(?:&&|$)', runs)
    assert user, "the image creates its user with useradd --uid ${APP_UID} ... NAME"
    [declared] = [a for k, a in image if k == "USER"]
    assert declared.split(":")[0] == "${" + user.group(1) + "}"
    owned = re.search(rf"chown\s+{user.group(2)}:\w+\s+([^&]*)", runs)
    assert owned and cache_dir in owned.group(1).split(), f"{cache_dir} is not chowned to {user.group(2)}"
    assert re.search(rf"mkdir\s+-p\s+[^&]*{re.escape(cache_dir)}(\s|$)", runs)


def test_cpu_image_drops_only_the_gpu_providers() -> None:
    runs = " ".join(a for k, a in dockerfile_image(DOCKERFILES["cpu"], "build") if k == "RUN")
    removed = set(re.findall(r"libonnxruntime_providers_(\w+)\.so", runs))
    assert removed == {"cuda", "tensorrt"}


# ---------------------------------------------------------------------------------- locks


@pytest.mark.parametrize("flavour", IMAGES)
def test_no_image_installs_training_packages(flavour: str) -> None:
    locks = image_locks(flavour)
    assert WORKER_LOCK in locks
    installed = {name for lock in locks for name in lock_pins(lock)}
    assert not installed & TRAINING_PACKAGES, sorted(installed & TRAINING_PACKAGES)
    for lock in locks:
        assert all("--hash=sha256:" in block for block in lock_blocks(lock)), f"{lock.name}: unhashed pin"


def test_training_packages_are_the_projects() -> None:
    """The list above names real training dependencies of this project, not guesses."""
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    for name in ("torch", "transformers", "scikit-learn", "pyarrow", "llama-cpp-python"):
        assert re.search(rf'"{re.escape(name)}[\[<>=!~ "]', pyproject), name


def test_cuda_lock_covers_onnxruntime_gpu_extras() -> None:
    worker_lock = lock_pins(WORKER_LOCK)
    assert worker_lock["onnxruntime-gpu"] == metadata.version("onnxruntime-gpu")
    cuda_lock = lock_pins(CUDA_LOCK)
    assert all(name.startswith("nvidia-") for name in cuda_lock), "the rest comes from worker.lock"
    assert image_locks("cuda") == [WORKER_LOCK, CUDA_LOCK]
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
    env = dockerfile_env(dockerfile_image(path))
    python = re.search(r"python:(\d+\.\d+)", dockerfile_args(path)["PYTHON_IMAGE"])
    assert python
    site = f"/opt/venv/lib/python{python.group(1)}/site-packages/nvidia"
    assert env["LD_LIBRARY_PATH"].split(":") == [f"{site}/cu{cuda_major}/lib", f"{site}/cudnn/lib"]
    assert "compute" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")


def test_loadtest_lock_is_what_the_load_generator_imports() -> None:
    """Every third-party module of loadtest/ comes from worker.lock or the loadtest lock, and the
    loadtest lock holds exactly the rest of their dependencies, at the versions the tests run."""
    worker = lock_pins(WORKER_LOCK)
    extra = lock_pins(LOADTEST_LOCK)
    assert image_locks("loadtest") == [WORKER_LOCK, LOADTEST_LOCK]
    assert not set(extra) & set(worker), "installed with --no-deps on top of worker.lock"
    providers = metadata.packages_distributions()
    roots = set()
    for module in third_party_imports(REPO_ROOT / "loadtest"):
        [distribution] = {canonicalize_name(d) for d in providers[module]}
        assert distribution in worker or distribution in extra, f"loadtest imports {module} ({distribution})"
        roots.add(distribution)
    closure: set[str] = set()
    pending = [r for r in roots if r in extra]
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        for requirement in requirements_of(name):
            dependency = canonicalize_name(requirement.name)
            pinned = worker.get(dependency) or extra.get(dependency)
            assert pinned, f"{name} needs {requirement}, in neither lock"
            assert requirement.specifier.contains(pinned, prereleases=True), f"{requirement}, pinned {pinned}"
            if dependency in extra:
                pending.append(dependency)
    assert closure == set(extra), f"not needed: {sorted(set(extra) - closure)}"
    stale = {n: (v, metadata.version(n)) for n, v in extra.items() if metadata.version(n) != v}
    assert not stale, f"{LOADTEST_LOCK.name} differs from the installed versions (regenerate it): {stale}"


def project_sources(flavour: str) -> list[str]:
    """The project paths copied into the stage whose virtualenv an image copies (and its parents)."""
    path, target = IMAGES[flavour]
    [copy] = [a for k, a in dockerfile_image(path, target) if k == "COPY" and "--from=" in a]
    built_by = re.search(r"--from=([\w.-]+)", copy)
    assert built_by
    sources = [a.split()[:-1] for k, a in dockerfile_image(path, built_by.group(1)) if k == "COPY"]
    return [s.rstrip("/") for group in sources for s in group if s.split("/")[0] in FIRST_PARTY]


def tool_modules() -> list[str]:
    """The offline tools, as the import-linter contract of pyproject.toml names them."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [contract] = [
        c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "serving-imports-no-tool"
    ]
    return list(contract["forbidden_modules"])


@pytest.mark.parametrize("flavour", WORKER_IMAGES)
def test_the_worker_image_copies_no_tool_module(flavour: str) -> None:
    copied = project_sources(flavour)
    assert "worker" in copied and "models/serving" in copied and "models/base" in copied
    for tool in tool_modules():
        tool_path = tool.replace(".", "/")
        holders = [
            s for s in copied if tool_path == s or tool_path.startswith(s + "/") or s.startswith(tool_path)
        ]
        assert not holders, f"the {flavour} worker image copies {tool} (through {holders})"


def test_the_loadtest_image_has_the_load_generator() -> None:
    assert "loadtest" in project_sources("loadtest")
