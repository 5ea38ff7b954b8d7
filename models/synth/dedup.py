"""Exact and near-duplicate removal for generated prompts.

Exact duplicates compare texts casefolded with whitespace collapsed. Near duplicates compare the
sets of character shingles (5 characters of that same form) by Jaccard similarity. Candidate
pairs come from datasketch's MinHash LSH, its bands weighted for recall (a pair at the threshold
is missed far more rarely than a dissimilar one is proposed); every candidate is then checked
with the exact Jaccard of its shingle sets, so a pair is only ever removed for a true similarity
>= threshold. Texts are processed in order: the first of a group of duplicates is kept.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

DEFAULT_NEAR_THRESHOLD = 0.8
SHINGLE_CHARS = 5
PERMUTATIONS = 128
#: datasketch's weights of false positives and false negatives when it sizes the LSH bands: a
#: missed near duplicate costs more than a candidate that the exact check then rejects.
LSH_WEIGHTS = (0.02, 0.98)
_PRIME = (1 << 31) - 1  # shingle hashes fit in 4 bytes


def dedup_key(text: str) -> str:
    """The form exact duplicates are compared in: casefolded, whitespace collapsed, stripped."""
    return " ".join(text.casefold().split())


def shingles(text: str, size: int = SHINGLE_CHARS) -> frozenset[int]:
    """Hashes of the `size`-character substrings of `dedup_key(text)` (the whole text if shorter)."""
    key = dedup_key(text)
    if len(key) <= size:
        return frozenset({_hash(key)})
    return frozenset(_hash(key[start : start + size]) for start in range(len(key) - size + 1))


def _hash(piece: str) -> int:
    return zlib.crc32(piece.encode("utf-8")) % _PRIME


def jaccard(first: frozenset[int], second: frozenset[int]) -> float:
    """Size of the intersection over size of the union (1.0 for two empty sets)."""
    union = len(first | second)
    return len(first & second) / union if union else 1.0


@dataclass
class Duplicates:
    """Positions of the texts kept, of exact duplicates and of near duplicates removed."""

    kept: list[int] = field(default_factory=list)
    exact: list[int] = field(default_factory=list)
    near: list[int] = field(default_factory=list)


def find_duplicates(texts: Sequence[str], threshold: float = DEFAULT_NEAR_THRESHOLD) -> Duplicates:
    """Split positions of `texts` into kept, exact and near duplicates (the first of a group is kept).

    A `threshold` above 1 turns near-duplicate detection off.
    """
    result = Duplicates()
    seen: set[str] = set()
    near = _NearIndex(threshold) if threshold <= 1 else None
    for position, text in enumerate(texts):
        key = dedup_key(text)
        if key in seen:
            result.exact.append(position)
            continue
        if near is not None and near.near_or_add(text):
            result.near.append(position)
            continue
        seen.add(key)
        result.kept.append(position)
    return result


class _NearIndex:
    """The kept texts' shingle sets, found through MinHash LSH (datasketch)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=PERMUTATIONS, weights=LSH_WEIGHTS)
        self.sets: list[frozenset[int]] = []

    def near_or_add(self, text: str) -> bool:
        """True when a kept text has a Jaccard similarity >= threshold with `text`; else keep it."""
        shingle_set = shingles(text)
        signature = MinHash(num_perm=PERMUTATIONS, seed=1)
        signature.update_batch([value.to_bytes(4, "little") for value in shingle_set])
        candidates = self.lsh.query(signature)
        if any(jaccard(shingle_set, self.sets[index]) >= self.threshold for index in candidates):
            return True
        self.lsh.insert(len(self.sets), signature)
        self.sets.append(shingle_set)
        return False
