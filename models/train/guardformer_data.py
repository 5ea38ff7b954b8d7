"""(policy, prompt, label) pairs for GuardFormer, from the shared datasets and hand-written rows.

Every prompt keeps the split the embedder guard gives it (`models.train.data`), so both guards
are measured on the same test prompts. The model learns whether a prompt *matches* a policy's
words; for a restriction that is a violation, for a scope policy (`kind: scope`, "only questions
about our flights") it is the opposite, and the served guard turns the match into a violation
score (`models.guardformer.guard`). A prompt's label for a policy is:

- 1 when the prompt matches that policy: `unsafe_content` / `prompt_injection` from the
  embedder's targets; the narrower policies from the row's dataset category (a forbidden-question
  category, a StrongREJECT or JailbreakBench category, a ToxiGen hateful statement) or from a
  hand-written row of `policy_examples.jsonl`; for a scope policy, a row written as complying
  with it (on topic);
- 0 when it is known not to: the embedder's 0 targets, ToxiGen's neutral statements, hand-written
  look-alikes, and prompts that belong to an unrelated policy (a question asking for financial
  advice is not a prompt injection). Related policies (fraud and economic harm, tax and
  financial advice, ...; `policy_relations.yaml`) never lend each other negatives. For a scope
  policy: its off-topic rows, and every prompt of the other sources that no related policy
  claims (off topic for a bank's assistant);
- unknown otherwise (the pair is not made).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from models.base.text import normalize_text
from models.policies import DEFAULT_POLICY_DIR, PolicyDefinition, load_policies
from models.train.data import UNKNOWN, Example, shared_examples

_HERE = Path(__file__).resolve().parent
HANDWRITTEN_POLICY_FILE = _HERE / "policy_examples.jsonl"
GIP_POLICY_FILE = _HERE / "gip_policies.yaml"
#: Hand-written training policies (of the kinds deployments write) and their rows.
WRITTEN_POLICY_FILE = _HERE / "written_policies.yaml"
WRITTEN_EXAMPLES_FILE = _HERE / "written_policy_examples.jsonl"
RELATIONS_FILE = _HERE / "policy_relations.yaml"
#: Every policy the pairs may name, and every file of per-policy rows.
TRAINING_POLICY_FILES = (DEFAULT_POLICY_DIR, GIP_POLICY_FILE, WRITTEN_POLICY_FILE)
HANDWRITTEN_POLICY_FILES = (HANDWRITTEN_POLICY_FILE, WRITTEN_EXAMPLES_FILE)

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
#: Policies left out of GuardFormer's training by default and measured zero-shot
#: (`models/bench/heldout_policies.py`): training settings may be compared on the selection
#: policies; the test policies are only reported.
HELDOUT_SELECTION_POLICIES = (
    "custom.no_celebrity_gossip",
    "custom.no_fortune_telling",
    "custom.retail_catalog_only",
    "custom.no_salary_negotiation_advice",
    "custom.no_deepfake_voice_cloning",
    "custom.no_graphic_violence",
)
HELDOUT_TEST_POLICIES = (
    "tax_advice",
    "legal_advice",
    "custom.no_betting_tips",
    "custom.no_medication_dosing",
    "custom.no_dating_advice",
    "custom.no_competitor_recommendations",
    "custom.telecom_support_scope",
    "custom.no_booking_on_behalf",
    "custom.no_doxxing_locating_people",
    "custom.no_academic_dishonesty",
)
#: Policies scored from the embedder's two targets rather than from categories.
TARGET_POLICIES = ("unsafe_content", "prompt_injection")
TOPIC_POLICIES = frozenset(
    {"financial_advice", "tax_advice", "legal_advice", "medical_advice", "gip.political_lobbying"}
)


@dataclass(frozen=True)
class PolicyRelations:
    """Which policies overlap (`related` groups of `RELATIONS_FILE`) and which are scope policies
    (`kind: scope` in their definitions)."""

    related: tuple[frozenset[str], ...]
    scope: frozenset[str]

    @classmethod
    def load(
        cls, path: Path = RELATIONS_FILE, policy_paths: Sequence[Path] = TRAINING_POLICY_FILES
    ) -> PolicyRelations:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return cls(
            related=tuple(frozenset(map(str, group)) for group in raw.get("related") or ()),
            scope=frozenset(p.id for p in all_policies(policy_paths).values() if p.is_scope),
        )

    def related_to(self, policy: str) -> frozenset[str]:
        """`policy`, every policy that shares a group with it, and the scope policies (an
        off-topic row may violate any policy)."""
        return self.scope.union({policy}, *(group for group in self.related if policy in group))


@cache
def relations() -> PolicyRelations:
    return PolicyRelations.load()


@dataclass(frozen=True, slots=True)
class Pair:
    """A (policy, prompt) pair; `label` is what the model learns: whether the prompt matches."""

    policy: str
    text: str
    label: int
    split: str
    scope: bool = False

    @property
    def violation(self) -> int:
        """1 when the prompt violates the policy: what served scores are measured against."""
        return 1 - self.label if self.scope else self.label


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
        if policy in relations().scope:
            return self._scope_match(policy)
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

    def _scope_match(self, policy: str) -> int:
        """1 on topic (a row complying with the scope), 0 off topic: its violating rows, and any
        prompt that belongs to no policy related to the scope."""
        if policy in self.negatives:
            return 1
        if policy in self.policies:
            return 0
        return UNKNOWN if self.policies & relations().related_to(policy) else 0

    def _implied(self, policy: str) -> int:
        """0 when the prompt belongs only to policies unrelated to `policy`, else unknown."""
        if self.policies:
            return UNKNOWN if self.policies & relations().related_to(policy) else 0
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
    """Rows `{"text", "policy", "label", "split"}`: a label for one policy.

    A row labelled 0 is a harmless look-alike: a negative of its policy and of every other one;
    for a scope policy it is on topic (`Prompt.label`), and unlabelled for the others.
    """
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
            policy = str(row["policy"])
            if int(row["label"]) == 1:
                prompt.policies.add(policy)
            else:
                prompt.negatives.add(policy)
                # on a scope's topic says nothing of other policies ("book me a flight" is an
                # airline assistant's business and may still break a no-booking rule)
                prompt.benign = prompt.benign or policy not in relations().scope


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
    handwritten: Sequence[Path] = HANDWRITTEN_POLICY_FILES,
    example_policies: Iterable[PolicyDefinition] = (),
) -> list[Prompt]:
    """Every prompt of the shared datasets, hand-written files and the policies' own examples."""
    prompts = prompts_from_examples(shared_examples(data_dir))
    for path in handwritten:
        if not path.is_file():
            raise FileNotFoundError(f"no hand-written policy rows at {path}")
        add_handwritten(prompts, path)
    add_policy_examples(prompts, example_policies)
    return list(prompts.values())


def hold_out(prompts: Iterable[Prompt], policy_ids: Iterable[str]) -> None:
    """Move every prompt written or labelled for a held-out policy to the test split.

    A held-out policy is measured zero-shot: none of its positives or look-alikes is trained on,
    not even as a row of another policy.
    """
    held = set(policy_ids)
    for prompt in prompts:
        if (prompt.policies | prompt.negatives) & held:
            prompt.split = "test"


def held_out_policies(model_dir: Path) -> list[str]:
    """The policies a trained directory's training left out, as its `train.json` records them."""
    record = model_dir / "train.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record} is missing: cannot tell which policies were held out")
    held = json.loads(record.read_text(encoding="utf-8")).get("held_out_policies")
    if not held:
        raise ValueError(f"{record} names no held-out policies")
    return [str(pid) for pid in held]


def benign_pool(prompts: Sequence[Prompt], size: int, split: str, seed: int = 1) -> list[str]:
    """Prompts of one split known harmless for every policy: look-alikes and prompts with no harm
    or policy known of them (not labelled for every topic: a policy may rightly flag a few)."""
    pool = sorted(
        p.text
        for p in prompts
        if p.split == split and not p.policies and (p.benign or tuple(p.targets) == (0, 0))
    )
    random.Random(seed).shuffle(pool)  # noqa: S311 - sampling, not security
    return pool[:size]


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
    hard_share: float = 1.0,
) -> list[Pair]:
    """Balanced pairs of one split: up to `max_positives` positives per policy, and negatives.

    The negatives of a policy are drawn from its explicit ones (look-alikes, neutral statements,
    the other topic policies' questions; a scope policy's off-topic rows) for `hard_share` of
    them, and from the rest (prompts known unrelated) for the others; either side fills in when
    the other runs short.
    """
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    pairs: list[Pair] = []
    in_split = [p for p in prompts if p.split == split]
    for policy in policies:
        positives, explicit, other = _partition(in_split, policy)
        rng.shuffle(positives)
        positives = positives[:max_positives]
        rng.shuffle(explicit)
        rng.shuffle(other)
        wanted = round(len(positives) * negatives_per_positive) if positives else 0
        negatives = _mix(explicit, other, wanted, hard_share)
        scope = policy in relations().scope
        pairs += [Pair(policy, p.text, 1, split, scope) for p in positives]
        pairs += [Pair(policy, p.text, 0, split, scope) for p in negatives]
    rng.shuffle(pairs)
    return pairs


def _mix(hard: list[Prompt], other: list[Prompt], wanted: int, hard_share: float) -> list[Prompt]:
    """`wanted` prompts, `hard_share` of them from `hard` when there are enough, the rest from `other`."""
    n_hard = min(len(hard), round(wanted * hard_share))
    n_other = min(len(other), wanted - n_hard)
    n_hard = min(len(hard), wanted - n_other)
    return hard[:n_hard] + other[:n_other]


def _partition(prompts: Sequence[Prompt], policy: str) -> tuple[list[Prompt], list[Prompt], list[Prompt]]:
    positives: list[Prompt] = []
    explicit: list[Prompt] = []
    other: list[Prompt] = []
    scope = policy in relations().scope
    for prompt in prompts:
        label = prompt.label(policy)
        if label == 1:
            positives.append(prompt)
        elif label == 0:
            hard = (
                (policy in prompt.policies)
                if scope
                else (
                    policy in prompt.negatives
                    or prompt.benign
                    or (prompt.policies and policy in TOPIC_POLICIES)
                )
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
