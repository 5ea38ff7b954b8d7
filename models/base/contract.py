"""The serving contract between the worker and a guard model.

The worker knows a model only through `GuardModel`: it normalizes text, tokenizes it into
windows, says what each encoded prompt costs (model rows x the longest row, so one packer can
budget every model call: `models.base.packing`), splits a prompt too costly for one call into
pieces, and scores a batch of encoded prompts in one call, returning one probability per policy.
How the scores are computed (ONNX Runtime on CUDA or CPU, an embedder guard, a cross-encoder)
is the model's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
#: The policies an encoded prompt asks for (indices into `ModelInfo.policies`); None: all of them.
Columns = tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class Policy:
    """One policy the model scores: its id, version and decision threshold.

    `fingerprint` (empty for policies fixed in a model) hashes the policy's words when a model
    reads them (GuardFormer): the cache keys on it, so a reworded policy never meets old scores.
    """

    id: str
    version: str
    threshold: float
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a verdict says about the model that produced it, and what its scores depend on.

    `fingerprint` hashes everything besides the name, the version and the policies that decides
    a score: the model files, the precision run, the window length and stride, calibration. A
    cache key holds it, so a model rewritten in place (a calibration, a new window length) never
    serves the scores of what it was before.
    """

    name: str
    version: str
    policies: tuple[Policy, ...]
    max_length: int
    fingerprint: str = ""

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.policies)


@dataclass(frozen=True, slots=True)
class Encoded:
    """One prompt as token-id windows, each at most `max_length` ids (special tokens included).

    A prompt longer than the model's window is split into overlapping windows; its score for a
    policy is the maximum over its windows.
    """

    windows: tuple[IdArray, ...]
    #: The policies to score; None: all of them. A model may compute every policy anyway (a
    #: fixed head does) or leave the others NaN (GuardFormer, whose cost is one row per policy).
    columns: Columns = field(default=None, kw_only=True)

    @property
    def n_tokens(self) -> int:
        return sum(len(w) for w in self.windows)


@dataclass(frozen=True, slots=True)
class Cost:
    """What one encoded prompt costs a model call: `rows` model inputs, the longest `longest` ids.

    In a call every row is padded to the call's longest row, so a call's work is its rows times
    its longest row (`models.base.packing` keeps that under the token budget).
    """

    rows: int
    longest: int

    @property
    def padded(self) -> int:
        return self.rows * self.longest


class GuardModel(Protocol):
    """What the worker needs from a guard model."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def device(self) -> str:
        """`cuda` or `cpu`: where the scores are computed."""
        ...

    def normalize(self, text: str) -> str:
        """The text the model scores and the cache keys on (same function for both)."""
        ...

    def encode(self, texts: Sequence[str], columns: Sequence[Columns] | None = None) -> list[Encoded]:
        """Tokenize already-normalized texts into windows, each asking for its `columns` (default all)."""
        ...

    def cost(self, item: Encoded) -> Cost:
        """What scoring `item` costs a model call."""
        ...

    def split(self, item: Encoded, max_tokens: int) -> list[Encoded]:
        """Pieces of `item` each costing at most `max_tokens` padded tokens where the model can cut
        that fine (one row is the least); the item's scores are the element-wise maximum of its
        pieces' scores, NaN (a policy a piece does not ask for) ignored."""
        ...

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        """Probabilities of shape [len(batch), len(info.policies)], in `info.policies` order, in one
        model call (the caller packs batches within its budget).

        Columns an item's `columns` leaves out may be NaN.
        """
        ...


def window_cost(item: Encoded) -> Cost:
    """The cost of a model whose rows are the prompt's windows (a fixed-head embedder)."""
    return Cost(len(item.windows), max((len(w) for w in item.windows), default=0))


def split_windows_within(item: Encoded, max_tokens: int, row_extra: int = 0) -> list[Encoded]:
    """`item` cut into runs of consecutive windows whose padded cost stays within `max_tokens`
    (at least one window each); `row_extra` ids are added to every row by the model."""
    longest = max((len(w) for w in item.windows), default=0) + row_extra
    per_piece = max(1, max_tokens // max(longest, 1))
    windows = item.windows
    return [
        Encoded(windows[start : start + per_piece], columns=item.columns)
        for start in range(0, len(windows), per_piece)
    ]
