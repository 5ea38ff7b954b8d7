"""Balance rows per label and split them into train/validation, both deterministically.

Balancing downsamples, within each policy, every label to the count of its rarest label; which
rows stay is decided by a hash of their text, not by their order, so rows generated later are
not systematically dropped. The split puts a row in `validation` when a hash of its text
(casefolded, whitespace collapsed) falls below `validation_share`: the same text always lands in
the same split, whatever else the run produced.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol, TypeVar

from models.synth.dedup import dedup_key

DEFAULT_VALIDATION_SHARE = 0.15
TRAIN, VALIDATION = "train", "validation"


class LabelledText(Protocol):
    """A row as balancing sees it."""

    @property
    def text(self) -> str: ...

    @property
    def policy(self) -> str: ...

    @property
    def label(self) -> int: ...


RowT = TypeVar("RowT", bound=LabelledText)


def text_fraction(text: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by the text (casefolded, whitespace collapsed) and `salt`."""
    digest = hashlib.sha256(f"{salt}\x00{dedup_key(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(text: str, validation_share: float = DEFAULT_VALIDATION_SHARE) -> str:
    """`validation` for about `validation_share` of texts, `train` for the rest; same text, same split."""
    return VALIDATION if text_fraction(text, "split") < validation_share else TRAIN


def balance(rows: Sequence[RowT]) -> tuple[list[RowT], int]:
    """The rows with every label of a policy cut to its rarest label's count, and how many went.

    A policy with only one label keeps no rows (there is nothing to balance it against). The
    rows kept stay in their original order.
    """
    groups: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for position, row in enumerate(rows):
        groups[row.policy][row.label].append(position)
    keep: set[int] = set()
    for labels in groups.values():
        smallest = min(len(positions) for positions in labels.values()) if len(labels) > 1 else 0
        for positions in labels.values():
            ranked = sorted(positions, key=lambda position: text_fraction(rows[position].text, "balance"))
            keep.update(ranked[:smallest])
    kept = [row for position, row in enumerate(rows) if position in keep]
    return kept, len(rows) - len(kept)
