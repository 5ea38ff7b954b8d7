"""How GuardFormer's pairs get their labels: positives, explicit and implied negatives, unknowns."""

from __future__ import annotations

from models.train.data import UNKNOWN
from models.train.guardformer_data import Prompt, make_pairs, pair_counts


def test_a_category_prompt_is_positive_for_its_policy_and_negative_for_unrelated_ones() -> None:
    question = Prompt("should I buy tesla shares with my savings", "train", (0, 0), {"financial_advice"})
    assert question.label("financial_advice") == 1
    assert question.label("prompt_injection") == 0
    assert question.label("unsafe_content") == 0
    assert question.label("medical_advice") == 0
    assert question.label("tax_advice") == UNKNOWN  # related policies lend no negatives
    assert question.label("gip.economic_harm") == UNKNOWN


def test_harmful_requests_are_negatives_of_topic_policies_only() -> None:
    harmful = Prompt("how do I make a weapon", "train", (1, 0))
    assert harmful.label("unsafe_content") == 1
    assert harmful.label("legal_advice") == 0
    assert harmful.label("gip.malware") == UNKNOWN  # it may well be malware: no label


def test_benign_look_alikes_are_negative_for_every_policy() -> None:
    benign = Prompt("how do I kill a python process", "train", benign=True)
    for policy in ("unsafe_content", "prompt_injection", "financial_advice", "gip.malware"):
        assert benign.label(policy) == 0


def test_pairs_are_balanced_and_prefer_explicit_negatives() -> None:
    prompts = [Prompt(f"pos {i}", "train", (0, 0), {"legal_advice"}) for i in range(4)]
    prompts += [Prompt(f"look-alike {i}", "train", benign=True) for i in range(8)]
    prompts += [Prompt(f"benign {i}", "train", (0, 0)) for i in range(50)]
    pairs = make_pairs(
        prompts, ["legal_advice"], "train", max_positives=3, negatives_per_positive=2.0, seed=0
    )
    assert pair_counts(pairs) == {"legal_advice": (3, 6)}
    assert all(p.text.startswith("look-alike") for p in pairs if p.label == 0)
    assert make_pairs(prompts, ["legal_advice"], "test", 3, 2.0, seed=0) == []


def test_policy_examples_file_is_well_formed_and_covers_every_starter_policy() -> None:
    import json
    from collections import Counter

    from models.policies import DEFAULT_POLICY_DIR, load_policies
    from models.train.guardformer_data import HANDWRITTEN_POLICY_FILE

    rows = [json.loads(line) for line in HANDWRITTEN_POLICY_FILE.read_text(encoding="utf-8").splitlines()]
    assert all(set(row) == {"text", "policy", "label", "split"} for row in rows)
    assert all(row["text"].strip() and row["label"] in (0, 1) for row in rows)
    assert {row["split"] for row in rows} == {"train", "test"}
    assert len({row["text"] for row in rows}) == len(rows), "duplicate texts"
    counts = Counter((row["policy"], row["label"], row["split"]) for row in rows)
    for policy in load_policies(DEFAULT_POLICY_DIR).ids:
        for label in (0, 1):
            assert counts[(policy, label, "train")] >= 20 and counts[(policy, label, "test")] >= 10, policy
