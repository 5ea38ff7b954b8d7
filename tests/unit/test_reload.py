"""Reload of the policy registry: the fingerprint of its files, the switch, the refusal."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import orjson
import pytest

from models.base.contract import GuardModel, ModelInfo, Policy
from models.policies import load_policies
from models.serving.routing import route_policies
from tests.unit.fakes import KeywordModel, ListSink, record, run_agent
from worker import metrics
from worker.cache import MemoryScoreCache, cache_key
from worker.config import Settings
from worker.pipeline import Pipeline
from worker.reload import RegistryWatcher, registry_fingerprint

UNSAFE = """\
id: unsafe_content
version: "{version}"
name: Unsafe content
description: {words}
threshold: 0.5
"""
INJECTION = """\
id: prompt_injection
version: "2"
name: Prompt injection
description: Attempts to override the instructions.
threshold: 0.5
"""


def write_unsafe(path: Path, version: str = "1", words: str = "Weapons and harm.") -> None:
    path.write_text(UNSAFE.format(version=version, words=words))


def registry(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    root.mkdir()
    write_unsafe(root / "unsafe.yaml")
    (root / "injection.yaml").write_text(INJECTION)
    return root


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


# ---- fingerprint


def test_file_fingerprint_changes_with_the_file_only(tmp_path: Path) -> None:
    file = tmp_path / "policies.yaml"
    write_unsafe(file)
    first = registry_fingerprint(file)
    assert registry_fingerprint(file) == first
    bump_mtime(file)
    touched = registry_fingerprint(file)
    assert touched != first
    write_unsafe(file, version="22")
    assert registry_fingerprint(file) != touched


def test_file_fingerprint_follows_a_symlink_to_its_target(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write_unsafe(first)
    write_unsafe(second)
    link = tmp_path / "policies.yaml"
    link.symlink_to(first)
    before = registry_fingerprint(link)
    swap = tmp_path / "tmp-link"
    swap.symlink_to(second)
    os.replace(swap, link)
    assert registry_fingerprint(link) != before


def test_directory_fingerprint_counts_its_yaml_files_only(tmp_path: Path) -> None:
    root = registry(tmp_path)
    first = registry_fingerprint(root)
    (root / "notes.txt").write_text("not a policy")
    assert registry_fingerprint(root) == first
    (root / "extra.yml").write_text(INJECTION.replace("prompt_injection", "other"))
    added = registry_fingerprint(root)
    assert added != first
    write_unsafe(root / "unsafe.yaml", version="3")
    edited = registry_fingerprint(root)
    assert edited != added
    (root / "extra.yml").unlink()
    assert registry_fingerprint(root) != edited


def test_a_missing_registry_has_a_fingerprint_of_its_own(tmp_path: Path) -> None:
    root = registry(tmp_path)
    present = registry_fingerprint(root)
    for file in root.iterdir():
        file.unlink()
    root.rmdir()
    assert registry_fingerprint(root) != present


def configmap_version(root: Path, name: str, version: str) -> Path:
    """A `..<name>` directory holding unsafe.yaml, as the kubelet writes one."""
    data = root / name
    data.mkdir()
    write_unsafe(data / "unsafe.yaml", version=version)
    return data


def test_configmap_volume_symlink_swap_is_a_change(tmp_path: Path) -> None:
    root = tmp_path / "mounted"
    root.mkdir()
    old = configmap_version(root, "..2024_01_01_00_00_00.1", "1")
    (root / "..data").symlink_to(old.name)
    (root / "unsafe.yaml").symlink_to("..data/unsafe.yaml")
    before = registry_fingerprint(root)
    assert load_policies(root).get("unsafe_content") is not None
    # the kubelet: a new timestamped directory (same size, same mtime here), an atomic ..data swap
    new = configmap_version(root, "..2024_01_01_00_01_00.2", "2")
    stat = (old / "unsafe.yaml").stat()
    os.utime(new / "unsafe.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (root / "..data_tmp").symlink_to(new.name)
    os.replace(root / "..data_tmp", root / "..data")
    after = registry_fingerprint(root)
    assert after != before
    assert registry_fingerprint(root) == after
    policy = load_policies(root).get("unsafe_content")
    assert policy is not None and policy.version == "2"


# ---- the switch and the refusal


def build_from(root: Path) -> GuardModel:
    """The keyword model routed over the registry at `root`, as the worker builds it."""
    return route_policies(KeywordModel(), load_policies(root))


def make_pipeline(root: Path) -> tuple[Pipeline, ListSink, RegistryWatcher]:
    sink = ListSink()
    metrics.POLICY_REGISTRY_INFO.clear()  # one worker per process: one registry shown
    pipeline = Pipeline(Settings(), build_from(root), MemoryScoreCache(), sink)
    watcher = RegistryWatcher(lambda: build_from(root), pipeline, root, registry_fingerprint(root))
    return pipeline, sink, watcher


def value(request_id: str, text: str) -> bytes:
    return orjson.dumps({"id": request_id, "text": text})


def registry_series() -> list[dict[str, str]]:
    return [
        sample.labels
        for family in metrics.REGISTRY.collect()
        if family.name == "guardstream_policy_registry_info"
        for sample in family.samples
    ]


def counter(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


async def test_a_changed_registry_is_switched_to_and_shown(tmp_path: Path) -> None:
    root = registry(tmp_path)
    pipeline, sink, watcher = make_pipeline(root)
    assert not await watcher.check()
    reloads = counter("guardstream_policy_reloads_total")
    write_unsafe(root / "unsafe.yaml", version="3", words="Weapons, harm and explosives.")
    bump_mtime(root / "unsafe.yaml")
    assert await watcher.check()
    assert counter("guardstream_policy_reloads_total") == reloads + 1
    await run_agent(pipeline, [record(value("a", "how to build a bomb"))])
    (verdict,) = sink.verdicts
    assert verdict.policy_versions == {"unsafe_content": "3", "prompt_injection": "2"}
    assert verdict.flagged == ["unsafe_content"]
    series = registry_series()
    assert len(series) == 1
    assert series[0]["policies"] == "prompt_injection@2,unsafe_content@3"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("id: [unclosed\n", "invalid YAML"),
        (UNSAFE.format(version="4", words="x") + "colour: red\n", "unknown field 'colour'"),
        (UNSAFE.format(version="4", words="x").replace("unsafe_content", "no_pineapple_pizza"), "no model"),
    ],
    ids=["yaml-error", "unknown-field", "unscorable-policy"],
)
async def test_an_invalid_registry_is_refused_and_the_last_good_one_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, reason: str
) -> None:
    root = registry(tmp_path)
    pipeline, sink, watcher = make_pipeline(root)
    served = pipeline.model
    shown = registry_series()
    failures = counter("guardstream_policy_reload_failures_total")
    (root / "unsafe.yaml").write_text(content)
    bump_mtime(root / "unsafe.yaml")
    with caplog.at_level(logging.ERROR, logger="worker.reload"):
        assert not await watcher.check()
        assert not await watcher.check()  # refused once, not at every check
    assert counter("guardstream_policy_reload_failures_total") == failures + 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "worker.reload"]
    assert "refused" in line and reason in line and "\n" not in line
    assert pipeline.model is served
    assert registry_series() == shown
    await run_agent(pipeline, [record(value("a", "how to build a bomb"))])
    assert sink.verdicts[0].policy_versions == {"unsafe_content": "1", "prompt_injection": "2"}


async def test_a_batch_in_hand_finishes_under_the_registry_it_started_with(tmp_path: Path) -> None:
    root = registry(tmp_path)
    pipeline, _, _ = make_pipeline(root)
    started = asyncio.ensure_future(pipeline.process([record(value("a", "hello"))]))
    await asyncio.sleep(0)  # the batch has read the served model
    write_unsafe(root / "unsafe.yaml", version="9")
    pipeline.switch(build_from(root))
    (old,) = (await started).verdicts
    (new,) = (await pipeline.process([record(value("b", "hello"))])).verdicts
    assert old.policy_versions["unsafe_content"] == "1"
    assert new.policy_versions["unsafe_content"] == "9"


def test_cache_keys_change_with_a_policys_words() -> None:
    def info(words_fingerprint: str) -> ModelInfo:
        return ModelInfo("m", "1", (Policy("custom", "1", 0.5, words_fingerprint),), 8, "f")

    assert cache_key("p:", info("aaaa"), "text") != cache_key("p:", info("bbbb"), "text")
