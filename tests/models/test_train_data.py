"""Labeling rules, deduplication and the numpy head trainer (no dataset or scikit-learn needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.base.mlp_head import MlpHead
from models.train.data import (
    HANDWRITTEN_FILES,
    POLICIES,
    UNKNOWN,
    Example,
    deduplicate,
    hash_split,
    load_handwritten_examples,
    row_targets,
)
from models.train.mlp import Dataset, MlpSettings, train_mlp


def row(label: int, category: str | None = None, source: str = "x") -> dict[str, object]:
    return {"text": "t", "label": label, "source": source, "category": category, "split": None}


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("advbench", row(1), ("advbench", (1, 0))),
        ("harmbench", row(1, "copyright|copyright"), ("harmbench", (UNKNOWN, 0))),
        ("harmbench", row(1, "standard|illegal"), ("harmbench", (1, 0))),
        ("toxigen", row(0, "women"), ("toxigen", (0, 0))),
        ("toxigen", row(1, "women"), ("toxigen", (1, 0))),
        ("verazuo_jailbreak_llms", row(1, "Financial Advice"), ("verazuo", (0, 0))),
        ("verazuo_jailbreak_llms", row(1, "Gov Decision"), ("verazuo", (UNKNOWN, 0))),
        ("verazuo_jailbreak_llms", row(1, "Malware"), ("verazuo", (1, 0))),
        ("verazuo_jailbreak_llms", row(1, "jailbreak=True|discord"), ("verazuo", (UNKNOWN, 1))),
        ("slabs_pi", row(0), ("slabs", (0, 0))),
        ("slabs_pi", row(1), ("slabs", (0, 1))),
        ("giskard_prompt_injections", row(1, "Jailbreak|DAN 9.0"), ("giskard", (UNKNOWN, 1))),
        ("jbb_artifacts", row(1, "PAIR|Privacy|jailbroken=True"), ("jbb_artifacts", (1, 1))),
        ("neuralchemy_pi", row(1, "jailbreak", "core (harmbench)"), ("harmbench", (1, 0))),
        ("neuralchemy_pi", row(1, "jailbreak", "core (wildguard_judgecomp)"), ("neuralchemy", (1, 1))),
        ("neuralchemy_pi", row(1, "direct_injection", "core (hackaprompt)"), ("neuralchemy", (0, 1))),
        ("neuralchemy_pi", row(1, "adversarial", "core (neuralchemy_v1)"), ("neuralchemy", (UNKNOWN, 1))),
        ("neuralchemy_pi", row(0, "benign", "core (harmbench_benign)"), ("neuralchemy", (0, 0))),
    ],
)
def test_row_targets(name: str, data: dict[str, object], expected: tuple[str, tuple[int, int]]) -> None:
    assert row_targets(name, data) == expected


def test_unknown_dataset_has_no_rule() -> None:
    with pytest.raises(ValueError, match="no labeling rule"):
        row_targets("mystery", row(1))


def test_deduplicate_keeps_the_most_held_out_split_and_merges_targets() -> None:
    examples = [
        Example("Same text", (1, UNKNOWN), "train", "advbench"),
        Example("same TEXT", (UNKNOWN, 0), "heldout", "harmbench"),
        Example("Other", (0, 0), "test", "slabs"),
        Example("other", (1, 0), "train", "advbench"),
    ]
    merged = {e.text.casefold(): e for e in deduplicate(examples)}
    assert merged["same text"].split == "heldout"
    assert merged["same text"].targets == (1, 0)
    assert merged["other"].targets == (UNKNOWN, 0)
    assert merged["other"].split == "test"


def test_hash_split_is_stable_and_roughly_70_15_15() -> None:
    splits = [hash_split(f"prompt {i}") for i in range(3000)]
    assert splits == [hash_split(f"prompt {i}") for i in range(3000)]
    assert 0.65 < splits.count("train") / 3000 < 0.75
    assert 0.12 < splits.count("test") / 3000 < 0.18


@pytest.mark.parametrize("path", HANDWRITTEN_FILES, ids=lambda p: p.name)
def test_handwritten_file_is_well_formed(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 60
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert len({r["text"].casefold() for r in rows}) == len(rows)
    assert all(r.get(policy, 0) in (0, 1) for r in rows for policy in POLICIES)
    examples = load_handwritten_examples(path)
    assert all(e.group == path.stem and e.text for e in examples)
    if path.stem.startswith("benign_"):
        assert all(e.targets == (0, 0) for e in examples)


def test_head_training_ignores_unknown_targets() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] > 0)], axis=1).astype(np.int64)
    y[::3, 1] = UNKNOWN  # a third of the rows say nothing about the second output
    train = Dataset(x[:400], y[:400], np.ones(400, dtype=np.float32))
    val = Dataset(x[400:], y[400:], np.ones(200, dtype=np.float32))
    head, history = train_mlp(
        train, val, MlpSettings(hidden=16, epochs=40, batch_size=64, learning_rate=1e-2)
    )
    predicted = head.predict(x[400:]) >= 0.5
    truth = np.stack([x[400:, 0] > 0, x[400:, 1] > 0], axis=1)
    assert (predicted == truth).mean() > 0.9
    assert history


def test_head_round_trips_through_safetensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    head = MlpHead(
        (rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)),
        (np.zeros(3, dtype=np.float32), np.ones(2, dtype=np.float32)),
    )
    head.save(tmp_path / "head.safetensors")
    loaded = MlpHead.load(tmp_path / "head.safetensors")
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), head.predict(x), atol=1e-7)
