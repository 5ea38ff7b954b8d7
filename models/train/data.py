"""Training examples for the two policies, built from the shared JSONL datasets.

Every example has one target per policy: 1 (violates), 0 (does not) or -1 (unknown: left out of
that policy's loss and metrics). What each dataset row means is written down in
`models.train.sources` (the mapping, file by file, and the held-out sources).

Splits: the datasets' own train/validation/test where they have them, else a hash of the text
(70/15/15). The held-out sources (`sources.HELDOUT_GROUPS`) go whole to `heldout`: never trained
on; the model, its epochs and its thresholds are chosen there. Exact duplicates (after
normalization, case-insensitive) are merged, keeping the most held-out split; conflicting targets
become unknown.

Balance: in the train split every (source group, targets) cell is capped at `TRAIN_CAP` prompts
(the ones kept are chosen by a hash of the text, so reruns keep the same), so no single source
and label dominates (Civil Comments, Davidson, S-Labs and the multilingual files are each larger
than the cap). Validation, test and held-out rows are never capped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base.text import normalize_text
from models.train.sources import (
    DATASETS,
    HELDOUT_GROUPS,
    POLICIES,
    UNKNOWN,
    Mapped,
    Targets,
    hash_bucket,
    hash_split,
    map_file,
    row_mapping,
)

SPLITS = ("train", "validation", "test", "heldout")
#: Most training prompts of one (source group, targets) cell.
TRAIN_CAP = 2000

__all__ = [
    "DATASETS",
    "HELDOUT_GROUPS",
    "POLICIES",
    "SPLITS",
    "UNKNOWN",
    "Example",
    "Targets",
    "hash_split",
    "row_mapping",
]


@dataclass(frozen=True)
class Example:
    """One normalized prompt with its targets, split and origin."""

    text: str
    targets: Targets
    split: str
    group: str
    category: str | None = None


def _split(mapped: Mapped, row: dict[str, Any], text: str) -> str:
    if mapped.group in HELDOUT_GROUPS:
        return "heldout"
    if mapped.split is not None:
        return mapped.split
    split = row.get("split")
    return str(split) if split in ("train", "validation", "test") else hash_split(text)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


def load_dataset_examples(data_dir: Path) -> list[Example]:
    """All labeled rows of the known datasets in `data_dir`, before deduplication."""
    missing = [name for name in DATASETS if not (data_dir / f"{name}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir} lacks {', '.join(missing)} (see the data README)")
    examples: list[Example] = []
    for name in DATASETS:
        for row, mapped in map_file(name, _read_jsonl(data_dir / f"{name}.jsonl")):
            text = normalize_text(mapped.text if mapped.text is not None else row["text"])
            if text:
                split = _split(mapped, row, text)
                examples.append(Example(text, mapped.targets, split, mapped.group, row.get("category")))
    return examples


#: The hand-written prompt files beside this module (see their make_*.py or README entries).
HANDWRITTEN_DIR = Path(__file__).resolve().parent
HANDWRITTEN_FILES = tuple(
    HANDWRITTEN_DIR / name
    for name in (
        "benign_edgy.jsonl",
        "benign_short.jsonl",
        "benign_sensitive.jsonl",
        "benign_long.jsonl",
        "benign_tasks.jsonl",
        "contrast_injection.jsonl",
        "contrast_unsafe.jsonl",
        "obfuscated.jsonl",
    )
)
#: Source groups of the hand-written files (their stems).
HANDWRITTEN_GROUPS = frozenset(path.stem for path in HANDWRITTEN_FILES)


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


def shared_examples(
    data_dir: Path, handwritten: Sequence[Path] = HANDWRITTEN_FILES, cap: int | None = TRAIN_CAP
) -> list[Example]:
    """The deduplicated, capped examples the shipped model is trained and evaluated on."""
    examples = load_dataset_examples(data_dir)
    for path in handwritten:
        examples += load_handwritten_examples(path)
    examples = deduplicate(examples)
    return examples if cap is None else cap_train(examples, cap)


def cap_train(examples: Sequence[Example], cap: int) -> list[Example]:
    """At most `cap` train prompts per (source group, targets); other splits untouched.

    The prompts kept are those with the lowest hash of their text: stable across runs and
    independent of file order.
    """
    cells: dict[tuple[str, Targets], list[Example]] = defaultdict(list)
    for example in examples:
        if example.split == "train":
            cells[(example.group, example.targets)].append(example)
    dropped: set[int] = set()
    for members in cells.values():
        if len(members) > cap:
            ranked = sorted(members, key=lambda e: (hash_bucket(e.text), e.text))
            dropped.update(id(e) for e in ranked[cap:])
    return [e for e in examples if id(e) not in dropped]


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
