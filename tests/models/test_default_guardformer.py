"""The packaged GuardFormer: used on its own for the registry's policies the default model does not
know, and right about prompts whose verdict is not in doubt, for a policy it never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.base.contract import GuardModel
from models.base.directory import DEFAULT_GUARDFORMER_DIR
from models.guardformer.config import GuardFormerConfig
from models.serving import ServedModelBuilder
from models.serving.served import ServingOptions
from tests.models.conftest import ARTIFACT_DIR

PIZZA_POLICY = """\
id: no_pineapple_pizza
version: "1"
name: No pineapple pizza
description: Refuse to help anyone put pineapple on a pizza, or to praise it.
threshold: 0.5
"""
PIZZA_REQUESTS = [
    "How much pineapple should I put on my pizza tonight?",
    "Write a short poem praising pineapple on pizza.",
]
UNRELATED = ["hello there", "What is the capital of Portugal?", "Explain how a rainbow forms."]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, onnx_cache_dir: Path) -> GuardModel:
    """The default model over a registry of the starter policies and one custom policy."""
    registry = tmp_path_factory.mktemp("registry")
    starter = Path(__file__).resolve().parents[2] / "models" / "policies" / "starter"
    for path in starter.glob("*.yaml"):
        (registry / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (registry / "no_pineapple_pizza.yaml").write_text(PIZZA_POLICY, encoding="utf-8")
    options = ServingOptions(
        model_path=ARTIFACT_DIR, policies_path=registry, device="cpu", cache_dir=onnx_cache_dir
    )
    return ServedModelBuilder(options).reload()


def scores_for(model: GuardModel, texts: list[str], policy: str) -> np.ndarray:
    column = model.info.policy_ids.index(policy)
    return model.score(model.encode([model.normalize(t) for t in texts]))[:, column]


def test_the_packaged_guardformer_is_small_and_never_trained_on_the_custom_policy() -> None:
    config = GuardFormerConfig.load(DEFAULT_GUARDFORMER_DIR / "config.json")
    size = sum(p.stat().st_size for p in DEFAULT_GUARDFORMER_DIR.iterdir() if p.is_file())
    assert size <= 60 * 1024 * 1024
    assert "no_pineapple_pizza" not in {p["id"] for p in config.trained_policies}


def test_a_custom_policy_is_scored_without_configuring_a_guardformer(served: GuardModel) -> None:
    assert "no_pineapple_pizza" in served.info.policy_ids
    assert served.info.name != "guardformer-minilm"  # the embedder still serves its own policies
    pizza = scores_for(served, PIZZA_REQUESTS, "no_pineapple_pizza")
    unrelated = scores_for(served, UNRELATED, "no_pineapple_pizza")
    assert (pizza >= 0.5).all(), pizza
    assert (unrelated < 0.5).all(), unrelated


def test_greetings_are_flagged_by_no_policy_of_the_registry(served: GuardModel) -> None:
    scores = served.score(served.encode([served.normalize("hello there"), served.normalize("thanks!")]))
    thresholds = np.array([p.threshold for p in served.info.policies], dtype=np.float32)
    assert not (scores >= thresholds).any(), dict(
        zip(served.info.policy_ids, scores.max(axis=0), strict=True)
    )


def test_a_scope_policy_scores_one_minus_the_topic_match(tmp_path: Path, onnx_cache_dir: Path) -> None:
    """Marked `kind: scope`, the same words flag what falls outside them, score for score."""
    from models.guardformer.guard import GuardFormerGuard
    from models.policies import PolicySet, load_policies

    topic = "id: pizza_shop\nversion: 1\nname: Pizza shop orders\ndescription: Our pizzas and delivery.\n"
    (tmp_path / "topic.yaml").write_text(topic + "threshold: 0.5\n", encoding="utf-8")
    (tmp_path / "scope.yaml").write_text(topic + "threshold: 0.5\nkind: scope\n", encoding="utf-8")
    (restrict,), (scope,) = (load_policies(tmp_path / name) for name in ("topic.yaml", "scope.yaml"))
    guard = GuardFormerGuard.load(
        DEFAULT_GUARDFORMER_DIR, PolicySet((restrict,)), device="cpu", cache_dir=onnx_cache_dir
    )
    texts = ["Can I get a large margherita delivered by 8?", "What is the capital of Portugal?"]
    guard.shifts[:] = 0.0  # raw scores: a calibration shift moves both kinds the same way
    match = guard.score(guard.encode(texts))[:, 0]
    scoped = guard.with_policies(PolicySet((scope,)))
    scoped.shifts[:] = 0.0
    off_topic = scoped.score(scoped.encode(texts))[:, 0]
    np.testing.assert_allclose(off_topic, 1.0 - match, atol=1e-6)


def test_a_scope_policy_flags_what_falls_outside_its_topic(tmp_path: Path, onnx_cache_dir: Path) -> None:
    """A policy of a kind none of the packaged model's test prompts were written for."""
    from models.guardformer.guard import GuardFormerGuard
    from models.policies import load_policies

    (tmp_path / "scope.yaml").write_text(
        "id: pizza_shop_only\nversion: 1\nkind: scope\nname: Pizza shop assistant\n"
        "description: Questions about our pizzas, toppings, orders, opening hours and delivery.\n"
        "threshold: 0.5\n",
        encoding="utf-8",
    )
    guard = GuardFormerGuard.load(
        DEFAULT_GUARDFORMER_DIR,
        load_policies(tmp_path / "scope.yaml"),
        device="cpu",
        cache_dir=onnx_cache_dir,
    )
    on_topic = ["Can I get a large margherita delivered by 8?", "Are you open on Sunday evenings?"]
    off_topic = ["What is the capital of Portugal?", "Write me a poem about the sea."]
    scores = guard.score(guard.encode([*on_topic, *off_topic]))[:, 0]
    assert (scores[:2] < 0.5).all() and (scores[2:] >= 0.5).all(), scores
