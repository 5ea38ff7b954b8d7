"""(policy, prompt, label) pairs for GuardFormer, from the shared datasets and hand-written rows.

Every prompt keeps the split the embedder guard gives it (`models.train.data`), so both guards
are measured on the same test prompts. A prompt's label for a policy is:

- 1 when the prompt belongs to that policy: `unsafe_content` / `prompt_injection` from the
  embedder's targets; the narrower policies from the row's dataset category (a forbidden-question
  category, a StrongREJECT or JailbreakBench category, a ToxiGen hateful statement) or from a
  hand-written row of `policy_examples.jsonl`;
- 0 when it is known not to: the embedder's 0 targets, ToxiGen's neutral statements, hand-written
  look-alikes, and prompts that belong to an unrelated policy (a question asking for financial
  advice is not a prompt injection). Related policies (fraud and economic harm, tax and
  financial advice, ...) never lend each other negatives;
- unknown otherwise (the pair is not made).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.base.text import normalize_text
from models.policies import PolicyDefinition, load_policies
from models.train.data import UNKNOWN, Example, shared_examples

HANDWRITTEN_POLICY_FILE = Path(__file__).resolve().parent / "policy_examples.jsonl"
GIP_POLICY_FILE = Path(__file__).resolve().parent / "gip_policies.yaml"

#: Dataset category -> policy, for the rows that carry one.
CATEGORY_POLICY = {
    # forbidden questions (verazuo)
    "Illegal Activity": "gip.illegal_activity",
    "Hate Speech": "hate_harassment",
    "Malware": "gip.malware",
    "Physical Harm": "gip.physical_harm",
    "Economic Harm": "gip.economic_harm",
    "Fraud": "gip.fraud",
    "Pornography": "gip.sexual_content",
    "Political Lobbying": "gip.political_lobbying",
    "Privacy Violence": "gip.privacy",
    "Legal Opinion": "legal_advice",
    "Financial Advice": "financial_advice",
    "Health Consultation": "medical_advice",
    "Gov Decision": "gip.government_decisions",
    # StrongREJECT
    "Non-violent crimes": "gip.illegal_activity",
    "Violence": "gip.physical_harm",
    "Disinformation and deception": "gip.disinformation",
    "Hate, harassment and discrimination": "hate_harassment",
    "Illegal goods and services": "gip.illegal_activity",
    "Sexual content": "gip.sexual_content",
    # JailbreakBench (the middle part of its category)
    "Privacy": "gip.privacy",
    "Government decision-making": "gip.government_decisions",
    "Physical harm": "gip.physical_harm",
    "Harassment/Discrimination": "hate_harassment",
    "Sexual/Adult content": "gip.sexual_content",
    "Malware/Hacking": "gip.malware",
    "Economic harm": "gip.economic_harm",
    "Fraud/Deception": "gip.fraud",
    "Disinformation": "gip.disinformation",
    # HarmBench (held out)
    "harassment_bullying": "hate_harassment",
    "cybercrime_intrusion": "gip.malware",
    "chemical_biological": "gip.physical_harm",
    "misinformation_disinformation": "gip.disinformation",
    "illegal": "gip.illegal_activity",
}
#: Policies that overlap: a prompt of one is never a negative of the other.
RELATED = (
    {
        "gip.illegal_activity",
        "gip.malware",
        "gip.fraud",
        "gip.economic_harm",
        "gip.privacy",
        "gip.physical_harm",
    },
    {"gip.fraud", "gip.economic_harm", "gip.disinformation"},
    {"gip.government_decisions", "gip.privacy", "gip.political_lobbying"},
    {"financial_advice", "tax_advice", "gip.economic_harm"},
    {"legal_advice", "tax_advice", "gip.government_decisions"},
    {"hate_harassment", "gip.disinformation"},
    {"gip.sexual_content", "hate_harassment"},
)
#: Policies scored from the embedder's two targets rather than from categories.
TARGET_POLICIES = ("unsafe_content", "prompt_injection")
TOPIC_POLICIES = frozenset(
    {"financial_advice", "tax_advice", "legal_advice", "medical_advice", "gip.political_lobbying"}
)


@dataclass(frozen=True, slots=True)
class Pair:
    policy: str
    text: str
    label: int
    split: str


@dataclass
class Prompt:
    """One prompt with what is known of it: embedder targets, its policies, explicit negatives."""

    text: str
    split: str
    targets: tuple[int, ...] = (UNKNOWN, UNKNOWN)
    policies: set[str] = field(default_factory=set)
    negatives: set[str] = field(default_factory=set)
    benign: bool = False  # hand-written look-alike or benign row: negative for every policy

    def label(self, policy: str) -> int:
        if policy in self.policies:
            return 1
        if policy in TARGET_POLICIES:
            target = self.targets[TARGET_POLICIES.index(policy)]
            return (
                target if target != UNKNOWN else (0 if policy in self.negatives or self.benign else UNKNOWN)
            )
        if policy in self.negatives or self.benign:
            return 0
        return self._implied(policy)

    def _implied(self, policy: str) -> int:
        """0 when the prompt belongs only to policies unrelated to `policy`, else unknown."""
        if self.policies:
            related = set().union(*(group for group in RELATED if policy in group)) | {policy}
            return UNKNOWN if self.policies & related else 0
        unsafe = self.targets[0]
        if unsafe == 0:
            return 0  # neither harmful nor in any category: a benign or injection-only prompt
        if unsafe == 1 and policy in TOPIC_POLICIES:
            return 0  # a harmful request is not a request for advice
        return UNKNOWN


def _category_policy(example: Example) -> str | None:
    category = example.category or ""
    if example.group == "jbb_artifacts":
        parts = category.split("|")
        category = parts[1] if len(parts) > 1 else ""
    elif example.group == "harmbench":
        category = category.split("|")[-1]
    return CATEGORY_POLICY.get(category)


def prompts_from_examples(examples: Iterable[Example]) -> dict[str, Prompt]:
    prompts: dict[str, Prompt] = {}
    for example in examples:
        prompt = Prompt(example.text, example.split, tuple(example.targets))
        policy = _category_policy(example)
        if policy is not None:
            prompt.policies.add(policy)
        if example.group == "toxigen":
            (prompt.policies if example.targets[0] == 1 else prompt.negatives).add("hate_harassment")
        if example.group in ("benign_edgy", "benign_short"):
            prompt.benign = True
        prompts[example.text.casefold()] = prompt
    return prompts


def add_handwritten(prompts: dict[str, Prompt], path: Path = HANDWRITTEN_POLICY_FILE) -> None:
    """Rows `{"text", "policy", "label", "split"}`: a label for one policy."""
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            text = normalize_text(row["text"])
            split = "validation" if row["split"] == "validation" else row["split"]
            if row["split"] not in ("train", "validation", "test"):
                raise ValueError(f"{path}:{number}: unknown split {row['split']!r}")
            prompt = prompts.setdefault(text.casefold(), Prompt(text, split))
            if int(row["label"]) == 1:
                prompt.policies.add(str(row["policy"]))
            else:
                prompt.benign = True


def add_policy_examples(prompts: dict[str, Prompt], policies: Iterable[PolicyDefinition]) -> None:
    """The examples written in each policy's definition, as training rows of that policy."""
    for policy in policies:
        for texts, label in ((policy.unsafe_examples, 1), (policy.safe_examples, 0)):
            for raw in texts:
                text = normalize_text(raw)
                prompt = prompts.setdefault(text.casefold(), Prompt(text, "train"))
                if label:
                    prompt.policies.add(policy.id)
                else:
                    prompt.negatives.add(policy.id)


def load_prompts(
    data_dir: Path,
    handwritten: Path | None = HANDWRITTEN_POLICY_FILE,
    example_policies: Iterable[PolicyDefinition] = (),
) -> list[Prompt]:
    """Every prompt of the shared datasets, hand-written files and the policies' own examples."""
    prompts = prompts_from_examples(shared_examples(data_dir))
    if handwritten is not None:
        if not handwritten.is_file():
            raise FileNotFoundError(f"no hand-written policy rows at {handwritten}")
        add_handwritten(prompts, handwritten)
    add_policy_examples(prompts, example_policies)
    return list(prompts.values())


def load_rows(paths: Iterable[Path]) -> list[Prompt]:
    """The prompts of rows files only (`guardstream synth` output, hand-written rows)."""
    prompts: dict[str, Prompt] = {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no rows file at {path}")
        add_handwritten(prompts, path)
    return list(prompts.values())


def make_pairs(
    prompts: Sequence[Prompt],
    policies: Sequence[str],
    split: str,
    max_positives: int,
    negatives_per_positive: float,
    seed: int,
) -> list[Pair]:
    """Balanced pairs of one split: up to `max_positives` positives per policy, and negatives.

    The negatives of a policy are its explicit ones first (look-alikes, neutral statements, the
    other topic policies' questions), then a random draw from the rest.
    """
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    pairs: list[Pair] = []
    in_split = [p for p in prompts if p.split == split]
    for policy in policies:
        positives, explicit, other = _partition(in_split, policy)
        rng.shuffle(positives)
        positives = positives[:max_positives]
        wanted = round(len(positives) * negatives_per_positive)
        rng.shuffle(explicit)
        rng.shuffle(other)
        negatives = (explicit + other)[:wanted] if positives else []
        pairs += [Pair(policy, p.text, 1, split) for p in positives]
        pairs += [Pair(policy, p.text, 0, split) for p in negatives]
    rng.shuffle(pairs)
    return pairs


def _partition(prompts: Sequence[Prompt], policy: str) -> tuple[list[Prompt], list[Prompt], list[Prompt]]:
    positives: list[Prompt] = []
    explicit: list[Prompt] = []
    other: list[Prompt] = []
    for prompt in prompts:
        label = prompt.label(policy)
        if label == 1:
            positives.append(prompt)
        elif label == 0:
            hard = (
                policy in prompt.negatives or prompt.benign or (prompt.policies and policy in TOPIC_POLICIES)
            )
            (explicit if hard else other).append(prompt)
    return positives, explicit, other


def pair_counts(pairs: Sequence[Pair]) -> dict[str, tuple[int, int]]:
    """policy -> (positives, negatives)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for pair in pairs:
        counts[pair.policy][1 - pair.label] += 1
    return {policy: (pos, neg) for policy, (pos, neg) in sorted(counts.items())}


def all_policies(policy_paths: Sequence[Path]) -> dict[str, PolicyDefinition]:
    """Every policy definition the pairs may name, by id (later files win on nothing: ids are unique)."""
    found: dict[str, PolicyDefinition] = {}
    for path in policy_paths:
        for policy in load_policies(path):
            if policy.id in found:
                raise ValueError(f"policy {policy.id!r} is defined twice ({path})")
            found[policy.id] = policy
    return found
