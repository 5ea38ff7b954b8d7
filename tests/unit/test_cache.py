import dataclasses

from models.base.contract import Policy
from tests.unit.fakes import INFO
from worker.cache import MemoryScoreCache, cache_key, policy_set_version
from worker.config import Settings


def test_key_is_stable_and_prefixed() -> None:
    key = cache_key("gs:v1:", INFO, "hello world")
    assert key == cache_key("gs:v1:", INFO, "hello world")
    assert key.startswith("gs:v1:")
    assert len(key) == len("gs:v1:") + 64


def test_key_changes_with_text_model_version_and_policy_version() -> None:
    base = cache_key("p:", INFO, "hello")
    assert cache_key("p:", INFO, "hello!") != base
    assert cache_key("p:", dataclasses.replace(INFO, version="0.0.2"), "hello") != base
    assert cache_key("p:", dataclasses.replace(INFO, name="other"), "hello") != base
    assert cache_key("p:", dataclasses.replace(INFO, fingerprint="recalibrated"), "hello") != base
    changed = (INFO.policies[0], Policy("prompt_injection", "3", 0.5))
    assert cache_key("p:", dataclasses.replace(INFO, policies=changed), "hello") != base


def test_a_subset_key_depends_on_the_subset_policies_alone() -> None:
    """A request for some policies is cached apart, and only those policies' changes move it."""
    subset = cache_key("p:", INFO, "hello", columns=(1,))
    assert subset != cache_key("p:", INFO, "hello")
    assert subset == cache_key("p:", INFO, "hello", columns=(1,))
    other_changed = (Policy("unsafe_content", "9", 0.5), INFO.policies[1])
    assert cache_key("p:", dataclasses.replace(INFO, policies=other_changed), "hello", columns=(1,)) == subset
    own_changed = (INFO.policies[0], Policy("prompt_injection", "3", 0.5))
    assert cache_key("p:", dataclasses.replace(INFO, policies=own_changed), "hello", columns=(1,)) != subset


def test_threshold_change_keeps_the_key() -> None:
    """Scores do not depend on thresholds, so cached scores stay valid when one moves."""
    moved = (Policy("unsafe_content", "1", 0.9), INFO.policies[1])
    assert policy_set_version(dataclasses.replace(INFO, policies=moved)) == policy_set_version(INFO)


def test_key_does_not_contain_the_text() -> None:
    assert "secret" not in cache_key("p:", INFO, "my secret prompt")


async def test_memory_cache_round_trip() -> None:
    cache = MemoryScoreCache()
    await cache.put_many([("a", [0.1, 0.2])])
    assert await cache.get_many(["a", "b"]) == [[0.1, 0.2], None]


async def test_a_worker_without_a_cache_holds_no_scores() -> None:
    """`--no-cache`: every score the worker computes is forgotten at once (no memory grows)."""
    from worker.app import make_cache

    cache = make_cache(Settings(redis={"enabled": False}))
    entries = [(f"key-{i}", [0.1, 0.9]) for i in range(1000)]
    await cache.put_many(entries)
    assert await cache.get_many([key for key, _ in entries]) == [None] * len(entries)
