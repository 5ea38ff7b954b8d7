"""How GuardFormer's pairs get their labels: positives, explicit and implied negatives, unknowns."""

from __future__ import annotations

from pathlib import Path

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


def test_a_scope_policy_is_learned_as_its_topic_and_measured_as_off_topic() -> None:
    from models.train.guardformer_data import relations

    scope = "custom.bank_topics_only"
    assert scope in relations().scope
    benign = Prompt("what is the capital of peru", "train", (0, 0), benign=True)
    assert benign.label(scope) == 0  # off topic: the model learns it does not match the scope
    assert benign.label("custom.no_crypto_advice") == 0
    on_topic = Prompt("how do I order a new card", "train", benign=True, negatives={scope})
    assert on_topic.label(scope) == 1
    off_topic = Prompt("write me a poem about autumn", "train", policies={scope})
    assert off_topic.label(scope) == 0
    assert off_topic.label("custom.no_crypto_advice") == UNKNOWN  # off-topic may be anything
    pairs = make_pairs([on_topic, off_topic, benign], [scope], "train", 10, 2.0, seed=0, hard_share=0.5)
    assert {(p.text, p.label, p.violation) for p in pairs} == {
        (on_topic.text, 1, 0),
        (off_topic.text, 0, 1),
        (benign.text, 0, 1),
    }


def test_negatives_mix_look_alikes_and_unrelated_prompts_by_share() -> None:
    positives = [Prompt(f"bet {i}", "train", policies={"custom.x"}) for i in range(4)]
    look_alikes = [Prompt(f"odds {i}", "train", negatives={"custom.x"}, benign=True) for i in range(10)]
    unrelated = [Prompt(f"cake {i}", "train", (0, 0)) for i in range(10)]
    prompts = [*positives, *look_alikes, *unrelated]
    for share, hard in ((1.0, 8), (0.5, 4), (0.0, 0)):
        pairs = make_pairs(prompts, ["custom.x"], "train", 10, 2.0, seed=0, hard_share=share)
        negatives = [p.text for p in pairs if p.label == 0]
        assert len(negatives) == 8 and sum(t.startswith("odds") for t in negatives) == hard
    few_hard = [*positives, *look_alikes[:2], *unrelated]
    pairs = make_pairs(few_hard, ["custom.x"], "train", 10, 2.0, seed=0, hard_share=1.0)
    assert sum(p.label == 0 for p in pairs) == 8  # the unrelated prompts fill in


def test_related_policies_come_from_the_relations_file(tmp_path: Path) -> None:
    from models.train.guardformer_data import PolicyRelations

    path = tmp_path / "relations.yaml"
    path.write_text("related:\n  - [a, b]\n  - [b, c]\n")
    policies = tmp_path / "s.yaml"
    policies.write_text(
        "id: s\nversion: 1\nname: S only\ndescription: Only questions about S.\nkind: scope\nthreshold: 0.5\n"
    )
    loaded = PolicyRelations.load(path, [policies])
    assert loaded.scope == {"s"}
    assert loaded.related_to("b") == {"a", "b", "c", "s"}
    assert loaded.related_to("d") == {"d", "s"}


def test_held_out_policies_rows_are_all_moved_to_the_test_split() -> None:
    from models.train.guardformer_data import hold_out

    prompts = [
        Prompt("p", "train", policies={"custom.x"}),
        Prompt("look-alike", "validation", negatives={"custom.x"}, benign=True),
        Prompt("other", "train", policies={"custom.y"}),
    ]
    hold_out(prompts, ["custom.x"])
    assert [p.split for p in prompts] == ["test", "test", "train"]
    assert make_pairs(prompts, ["custom.x"], "train", 10, 2.0, seed=0) == []


def test_written_policies_and_rows_are_well_formed() -> None:
    import json
    from collections import Counter

    from models.train.guardformer_data import (
        HELDOUT_SELECTION_POLICIES,
        HELDOUT_TEST_POLICIES,
        TRAINING_POLICY_FILES,
        WRITTEN_EXAMPLES_FILE,
        WRITTEN_POLICY_FILE,
        all_policies,
        relations,
    )

    written = all_policies([WRITTEN_POLICY_FILE])
    rows = [json.loads(line) for line in WRITTEN_EXAMPLES_FILE.read_text(encoding="utf-8").splitlines()]
    assert all(set(row) == {"text", "policy", "label", "split"} for row in rows)
    assert {row["split"] for row in rows} == {"train", "validation", "test"}
    texts = [" ".join(row["text"].casefold().split()) for row in rows]
    assert len(set(texts)) == len(texts), "duplicate texts"
    counts = Counter((row["policy"], row["label"]) for row in rows)
    assert set(counts) == {(pid, label) for pid in written for label in (0, 1)}
    assert all(count >= 15 for count in counts.values())
    every = all_policies(TRAINING_POLICY_FILES)
    named = set().union(*relations().related)
    assert named <= set(every), named - set(every)
    held = {*HELDOUT_SELECTION_POLICIES, *HELDOUT_TEST_POLICIES}
    assert held <= set(every) and not set(HELDOUT_SELECTION_POLICIES) & set(HELDOUT_TEST_POLICIES)


def test_a_row_on_a_scopes_topic_is_no_negative_of_other_policies(tmp_path: Path) -> None:
    import json

    from models.train.guardformer_data import add_handwritten

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in (
                {
                    "text": "book me on the 8am flight to Lisbon",
                    "policy": "custom.bank_topics_only",
                    "label": 0,
                    "split": "train",
                },
                {
                    "text": "what is a stock split",
                    "policy": "custom.no_crypto_advice",
                    "label": 0,
                    "split": "train",
                },
            )
        ),
        encoding="utf-8",
    )
    prompts: dict[str, Prompt] = {}
    add_handwritten(prompts, rows)
    on_topic, look_alike = prompts.values()
    assert on_topic.label("custom.bank_topics_only") == 1
    assert on_topic.label("custom.no_payment_execution") == UNKNOWN  # on topic, and still a payment
    assert look_alike.label("custom.no_payment_execution") == 0
