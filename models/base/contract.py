"""The serving contract between the worker and a guard model.

The worker knows a model only through `GuardModel`: it normalizes text, tokenizes it into
windows (so it can budget tokens per batch), and scores a batch of encoded prompts, returning one
probability per policy. How the scores are computed (ONNX Runtime on CUDA or CPU, an embedder
guard, a cross-encoder) is the model's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]


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
    """What a verdict says about the model that produced it."""

    name: str
    version: str
    policies: tuple[Policy, ...]
    max_length: int

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
    #: The policies to score (indices into `info.policies`); None: all of them. A model may
    #: compute every policy anyway (a fixed head does) or leave the others NaN (GuardFormer,
    #: whose cost is one model row per policy).
    columns: tuple[int, ...] | None = field(default=None, kw_only=True)

    @property
    def n_tokens(self) -> int:
        return sum(len(w) for w in self.windows)


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

    def encode(self, texts: list[str]) -> list[Encoded]:
        """Tokenize already-normalized texts into windows."""
        ...

    def score(self, batch: list[Encoded]) -> FloatArray:
        """Probabilities of shape [len(batch), len(info.policies)], in `info.policies` order.

        Columns an item's `columns` leaves out may be NaN.
        """
        ...
