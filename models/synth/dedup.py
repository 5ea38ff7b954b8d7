"""Exact and near-duplicate removal for generated prompts.

Exact duplicates compare texts casefolded with whitespace collapsed. Near duplicates compare the
sets of character shingles (5 characters of that same form) by Jaccard similarity. Candidate
pairs come from MinHash signatures split into LSH bands, sized so that a pair at the threshold
becomes a candidate with probability >= 0.99; every candidate is then checked with the exact
Jaccard of its shingle sets, so a pair is only ever removed for a true similarity >= threshold.
Texts are processed in order: the first of a group of duplicates is kept.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

DEFAULT_NEAR_THRESHOLD = 0.8
SHINGLE_CHARS = 5
PERMUTATIONS = 128
#: Probability that a pair exactly at the threshold becomes an LSH candidate.
CANDIDATE_RECALL = 0.99
_PRIME = (1 << 31) - 1  # shingle hashes and coefficients stay below 2**31: products fit in uint64


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


def band_rows(threshold: float, permutations: int = PERMUTATIONS, recall: float = CANDIDATE_RECALL) -> int:
    """Rows per LSH band: the largest divisor r of `permutations` that still finds a pair of
    similarity `threshold` with probability >= `recall` (1 - (1 - t^r)^(permutations / r))."""
    divisors = [rows for rows in range(1, permutations + 1) if permutations % rows == 0]
    good = [rows for rows in divisors if 1 - (1 - threshold**rows) ** (permutations // rows) >= recall]
    return max(good, default=1)


class MinHasher:
    """MinHash signatures with `permutations` universal hash functions (a*x + b mod p)."""

    def __init__(self, permutations: int = PERMUTATIONS, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, permutations, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, permutations, dtype=np.uint64)

    def signature(self, shingle_set: frozenset[int]) -> NDArray[np.uint64]:
        """The minimum of each hash function over the set."""
        values = np.fromiter(shingle_set, dtype=np.uint64, count=len(shingle_set))
        hashed: NDArray[np.uint64] = (np.outer(values, self.a) + self.b) % np.uint64(_PRIME)
        minima: NDArray[np.uint64] = hashed.min(axis=0)
        return minima


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
    """The kept texts' shingle sets, found through MinHash LSH buckets."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.hasher = MinHasher()
        self.rows = band_rows(threshold)
        self.buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        self.sets: list[frozenset[int]] = []

    def _bands(self, shingle_set: frozenset[int]) -> list[tuple[int, bytes]]:
        signature = self.hasher.signature(shingle_set)
        return [
            (band, signature[start : start + self.rows].tobytes())
            for band, start in enumerate(range(0, len(signature), self.rows))
        ]

    def near_or_add(self, text: str) -> bool:
        """True when a kept text has a Jaccard similarity >= threshold with `text`; else keep it."""
        shingle_set = shingles(text)
        bands = self._bands(shingle_set)
        candidates = {index for band in bands for index in self.buckets.get(band, ())}
        if any(jaccard(shingle_set, self.sets[index]) >= self.threshold for index in candidates):
            return True
        for band in bands:
            self.buckets[band].append(len(self.sets))
        self.sets.append(shingle_set)
        return False
