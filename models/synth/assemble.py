"""Turn the work records of a plan into output rows: reflection decisions, dedup, balance, split.

Output rows have the fields of `models/train/policy_examples.jsonl` first (`text`, `policy`,
`label` 1 = violates / 0 = complies, `split`), so the training tools read them, then
`rationale`, `reflection`, `generator` and `source: "synthetic"`.

Reflection decisions are applied here rather than when the judgement arrives, so a rerun with a
different `--on-disagree` re-decides without asking the generator again:

- agreed: the row keeps its label;
- disagreed: `drop` leaves it out, `relabel` gives it the judged label and the judgement's
  rationale;
- unparsed (or failed at the generator): the row keeps its intended label.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from models.synth.dedup import DEFAULT_NEAR_THRESHOLD, find_duplicates
from models.synth.parsing import FailureReason
from models.synth.prompts import COMPLIES, LABEL_WORDS, VIOLATES
from models.synth.requests import GenerationRequest
from models.synth.runner import AGREED, DISAGREED, OK, UNPARSED
from models.synth.selection import DEFAULT_VALIDATION_SHARE, balance, split_of
from models.synth.workdir import WorkDir

SOURCE = "synthetic"
DisagreeAction = Literal["drop", "relabel"]


@dataclass(frozen=True, slots=True)
class AssembleSettings:
    """How generated records become rows."""

    reflect: bool = True
    on_disagree: DisagreeAction = "drop"
    near_threshold: float = DEFAULT_NEAR_THRESHOLD
    balance: bool = True
    validation_share: float = DEFAULT_VALIDATION_SHARE


@dataclass(frozen=True, slots=True)
class SynthRow:
    """One accepted prompt before splitting."""

    text: str
    policy: str
    label: int
    rationale: str
    reflection: dict[str, Any]
    generator: str

    def to_json(self, split: str) -> dict[str, Any]:
        """The output row, training fields first."""
        return {
            "text": self.text,
            "policy": self.policy,
            "label": self.label,
            "split": split,
            "rationale": self.rationale,
            "reflection": self.reflection,
            "generator": self.generator,
            "source": SOURCE,
        }


@dataclass
class AssemblyCounts:
    """What happened to the plan's requests on the way to the output."""

    requests: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    repaired: int = 0
    reflection: Counter[str] = field(default_factory=Counter)
    reflection_unparsed: Counter[str] = field(default_factory=Counter)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    balance_removed: int = 0
    rows: Counter[tuple[str, int]] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def assemble(
    plan: Sequence[GenerationRequest], work: WorkDir, settings: AssembleSettings
) -> tuple[list[dict[str, Any]], AssemblyCounts]:
    """The output rows of `plan` from the work records, and the counts of every step."""
    counts = AssemblyCounts(requests=len(plan))
    candidates = [row for request in plan if (row := _candidate(request, work, settings, counts)) is not None]
    rows = _deduplicate(candidates, settings.near_threshold, counts)
    if settings.balance:
        rows, counts.balance_removed = balance(rows)
    output = []
    for row in rows:
        split = split_of(row.text, settings.validation_share)
        counts.rows[(row.policy, row.label)] += 1
        counts.splits[split] += 1
        output.append(row.to_json(split))
    return output, counts


def _candidate(
    request: GenerationRequest, work: WorkDir, settings: AssembleSettings, counts: AssemblyCounts
) -> SynthRow | None:
    """The row of one request after its reflection, or None (failed, dropped)."""
    generated = work.generated.get(request.key)
    if generated is None:
        counts.failures[FailureReason.GENERATOR_ERROR.value] += 1
        return None
    if generated["status"] != OK:
        counts.failures[str(generated.get("reason", "unknown"))] += 1
        return None
    counts.ok += 1
    counts.repaired += bool(generated.get("repaired"))
    row = SynthRow(
        text=generated["text"],
        policy=request.policy.id,
        label=request.label,
        rationale=generated.get("rationale", ""),
        reflection={"status": "skipped"},
        generator=generated.get("generator", ""),
    )
    if not settings.reflect:
        return row
    return _apply_reflection(row, work.reflected.get(request.key), settings.on_disagree, counts)


def _apply_reflection(
    row: SynthRow, reflected: dict[str, Any] | None, on_disagree: DisagreeAction, counts: AssemblyCounts
) -> SynthRow | None:
    """The row as its reflection decides (see the module docstring)."""
    if reflected is None or reflected["status"] == UNPARSED:
        reason = FailureReason.GENERATOR_ERROR.value if reflected is None else str(reflected.get("reason"))
        counts.reflection[UNPARSED] += 1
        counts.reflection_unparsed[reason] += 1
        return replace(row, reflection={"status": UNPARSED, "reason": reason})
    judged = VIOLATES if reflected["label"] == LABEL_WORDS[VIOLATES] else COMPLIES
    rationale = str(reflected.get("rationale", ""))
    if reflected["status"] == AGREED:
        counts.reflection[AGREED] += 1
        return replace(
            row, reflection={"status": AGREED, "label": reflected["label"], "rationale": rationale}
        )
    counts.reflection[DISAGREED] += 1
    if on_disagree == "drop":
        counts.reflection["dropped"] += 1
        return None
    counts.reflection["relabelled"] += 1
    reflection = {
        "status": DISAGREED,
        "label": reflected["label"],
        "rationale": rationale,
        "intended": LABEL_WORDS[row.label],
        "action": "relabelled",
    }
    return replace(row, label=judged, rationale=rationale or row.rationale, reflection=reflection)


def _deduplicate(rows: list[SynthRow], threshold: float, counts: AssemblyCounts) -> list[SynthRow]:
    """Rows without exact or near duplicates of an earlier row of the same policy, in order."""
    by_policy: dict[str, list[int]] = defaultdict(list)
    for position, row in enumerate(rows):
        by_policy[row.policy].append(position)
    keep: set[int] = set()
    for positions in by_policy.values():
        duplicates = find_duplicates([rows[position].text for position in positions], threshold)
        keep.update(positions[index] for index in duplicates.kept)
        counts.exact_duplicates += len(duplicates.exact)
        counts.near_duplicates += len(duplicates.near)
    return [row for position, row in enumerate(rows) if position in keep]
