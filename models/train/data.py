"""Training examples for the two policies, built from the shared JSONL datasets.

Every example has one target per policy: 1 (violates), 0 (does not) or -1 (unknown: left out of
that policy's loss and metrics). The mapping from a dataset row to targets:

- benign rows (label 0) of every dataset, and the hand-written edgy benign prompts: 0 for both;
- plain harmful requests (advbench, harmbench, strongreject, malicious_instruct, toxigen hateful
  statements, verazuo forbidden questions in harm categories, the HarmBench rows of neuralchemy):
  unsafe_content 1, prompt_injection 0 (a harmful request is not an injection);
- HarmBench copyright requests: unsafe_content unknown (an IP matter, not harmful content);
- verazuo topic questions (financial, legal, health advice, political lobbying): 0 for both,
  "Gov Decision" questions mix harmful and harmless ones: unsafe_content unknown;
- prompt injections (slabs_pi, neuralchemy, yanismiraoui): prompt_injection 1, unsafe_content 0,
  except neuralchemy's jailbreak-style categories, whose payload may be harmful: unknown;
- jailbreak templates (verazuo jailbreak prompts, giskard): prompt_injection 1, unsafe_content
  unknown (the template is not a request; the payload is a placeholder);
- jailbreak attacks around a harmful request (jbb_artifacts, wildguard jailbreaks in
  neuralchemy): 1 for both.

Splits: the datasets' own train/validation/test where they have them, else a hash of the text
(70/15/15). HarmBench (also HarmBench rows inside neuralchemy) and yanismiraoui are held out
whole, for recall on unseen sources. Exact duplicates (after normalization, case-insensitive)
are merged, keeping the most held-out split; conflicting targets become unknown.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base.text import normalize_text

POLICIES = ("unsafe_content", "prompt_injection")
SPLITS = ("train", "validation", "test", "heldout")
HELDOUT_GROUPS = frozenset({"harmbench", "yanismiraoui"})
UNKNOWN = -1
#: One target per policy, in the order of the policies trained.
Targets = tuple[int, ...]

_HARMFUL_FILES = ("advbench", "strongreject", "malicious_instruct")
#: Source group of each dataset file (its stem when not listed).
_GROUPS = {
    "slabs_pi": "slabs",
    "neuralchemy_pi": "neuralchemy",
    "yanismiraoui_pi": "yanismiraoui",
    "giskard_prompt_injections": "giskard",
    "verazuo_jailbreak_llms": "verazuo",
}
_TOPIC_BENIGN = frozenset({"Financial Advice", "Legal Opinion", "Health Consultation", "Political Lobbying"})
_JAILBREAK_STYLE = frozenset({"jailbreak", "adversarial", "crescendo", "many_shot"})


@dataclass(frozen=True)
class Example:
    """One normalized prompt with its targets, split and origin."""

    text: str
    targets: Targets
    split: str
    group: str
    category: str | None = None


def _neuralchemy_targets(row: dict[str, Any]) -> tuple[str, Targets]:
    subset = row["source"].rsplit("(", 1)[-1].rstrip(")")
    if subset == "harmbench":
        return "harmbench", (1, 0)
    if row["label"] == 0:
        return "neuralchemy", (0, 0)
    if subset == "wildguard_judgecomp":
        return "neuralchemy", (1, 1)
    unsafe = UNKNOWN if row["category"] in _JAILBREAK_STYLE else 0
    return "neuralchemy", (unsafe, 1)


def _verazuo_targets(row: dict[str, Any]) -> Targets:
    category = row["category"] or ""
    if category.startswith("jailbreak="):
        return (UNKNOWN, 1)
    if category in _TOPIC_BENIGN:
        return (0, 0)
    if category == "Gov Decision":
        return (UNKNOWN, 0)
    return (1, 0)


def _targets(name: str, row: dict[str, Any]) -> Targets:
    if row["label"] == 0:
        return (0, 0)
    if name in _HARMFUL_FILES or name == "toxigen":
        return (1, 0)
    if name == "harmbench":
        return ((UNKNOWN if (row["category"] or "").startswith("copyright") else 1), 0)
    if name == "verazuo_jailbreak_llms":
        return _verazuo_targets(row)
    if name in ("slabs_pi", "yanismiraoui_pi"):
        return (0, 1)
    if name == "giskard_prompt_injections":
        return (UNKNOWN, 1)
    if name == "jbb_artifacts":
        return (1, 1)
    raise ValueError(f"no labeling rule for dataset {name!r}")


def row_targets(name: str, row: dict[str, Any]) -> tuple[str, Targets]:
    """(source group, targets) of one row of the dataset file `name` (file stem)."""
    if name == "neuralchemy_pi":
        return _neuralchemy_targets(row)
    return _GROUPS.get(name, name), _targets(name, row)


def hash_split(text: str) -> str:
    """A stable 70/15/15 train/validation/test assignment from the text alone."""
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "train" if bucket < 70 else "validation" if bucket < 85 else "test"


def _split(group: str, row: dict[str, Any], text: str) -> str:
    if group in HELDOUT_GROUPS:
        return "heldout"
    split = row.get("split")
    return str(split) if split in ("train", "validation", "test") else hash_split(text)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


DATASETS = (
    "advbench",
    "harmbench",
    "strongreject",
    "malicious_instruct",
    "toxigen",
    "verazuo_jailbreak_llms",
    "slabs_pi",
    "neuralchemy_pi",
    "yanismiraoui_pi",
    "giskard_prompt_injections",
    "jbb_artifacts",
)


def load_dataset_examples(data_dir: Path) -> list[Example]:
    """All labeled rows of the known datasets in `data_dir`, before deduplication."""
    missing = [name for name in DATASETS if not (data_dir / f"{name}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir} lacks {', '.join(missing)} (see the data README)")
    examples: list[Example] = []
    for name in DATASETS:
        for row in _read_jsonl(data_dir / f"{name}.jsonl"):
            if row["label"] not in (0, 1):
                continue
            group, targets = row_targets(name, row)
            text = normalize_text(row["text"])
            if text:
                examples.append(Example(text, targets, _split(group, row, text), group, row.get("category")))
    return examples


#: The hand-written prompt files beside this module (see their make_*.py or README entries).
HANDWRITTEN_DIR = Path(__file__).resolve().parent
HANDWRITTEN_FILES = tuple(
    HANDWRITTEN_DIR / name
    for name in (
        "benign_edgy.jsonl",
        "benign_short.jsonl",
        "obfuscated.jsonl",
    )
)


def load_handwritten_examples(path: Path) -> list[Example]:
    """A hand-written JSONL file: `text`, `split`, a 0/1 column per policy (absent: 0, benign).

    The source group is the file's stem; the category its `topic` or `technique`.
    """
    examples = []
    for row in _read_jsonl(path):
        targets = tuple(int(row.get(policy, 0)) for policy in POLICIES)
        category = row.get("topic") or row.get("technique")
        examples.append(Example(normalize_text(row["text"]), targets, row["split"], path.stem, category))
    return examples


def shared_examples(data_dir: Path, handwritten: Sequence[Path] = HANDWRITTEN_FILES) -> list[Example]:
    """The deduplicated examples the shipped model is trained and evaluated on."""
    examples = load_dataset_examples(data_dir)
    for path in handwritten:
        examples += load_handwritten_examples(path)
    return deduplicate(examples)


def _merge_targets(a: Targets, b: Targets) -> Targets:
    return tuple(
        y if x == UNKNOWN else x if y in (UNKNOWN, x) else UNKNOWN for x, y in zip(a, b, strict=True)
    )


def deduplicate(examples: list[Example]) -> list[Example]:
    """One example per case-folded text, in the most held-out split, with merged targets."""
    rank = {split: index for index, split in enumerate(SPLITS)}
    kept: dict[str, Example] = {}
    for example in examples:
        key = example.text.casefold()
        previous = kept.get(key)
        if previous is None:
            kept[key] = example
            continue
        winner = example if rank[example.split] > rank[previous.split] else previous
        targets = _merge_targets(previous.targets, example.targets)
        kept[key] = Example(winner.text, targets, winner.split, winner.group, winner.category)
    return list(kept.values())
