"""Prompt-level evaluation of a trained head: scores are the maximum over a prompt's windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.runtime.base import FloatArray
from models.runtime.mlp_head import MlpHead
from models.train.data import POLICIES, Example
from models.train.embed import WindowEmbeddings
from models.train.metrics import binary_metrics, fpr_threshold, max_f1_threshold


def prompt_scores(head: MlpHead, embeddings: WindowEmbeddings, n_prompts: int) -> FloatArray:
    """[n_prompts, n_policies]: per prompt, the maximum of the head's outputs over its windows."""
    window_scores = head.predict(embeddings.vectors)
    starts = np.searchsorted(embeddings.doc, np.arange(n_prompts))
    return np.maximum.reduceat(window_scores, starts, axis=0)


def targets_of(examples: Sequence[Example]) -> npt.NDArray[np.int64]:
    return np.array([e.targets for e in examples], dtype=np.int64).reshape(-1, len(POLICIES))


def calibrate(y: npt.NDArray[np.int64], scores: FloatArray, target_fpr: float | None) -> list[float]:
    """One threshold per policy: max F1, or the lowest one within `target_fpr` when it is given."""
    return [
        fpr_threshold(y[:, p], scores[:, p], target_fpr)
        if target_fpr is not None
        else max_f1_threshold(y[:, p], scores[:, p])
        for p in range(len(POLICIES))
    ]


def per_policy(y: npt.NDArray[np.int64], scores: FloatArray, thresholds: list[float]) -> dict[str, Any]:
    return {
        policy: binary_metrics(y[:, p], scores[:, p], thresholds[p])
        for p, policy in enumerate(POLICIES)
        if (y[:, p] >= 0).any()
    }


def recall_by_group(
    examples: Sequence[Example], scores: FloatArray, thresholds: list[float]
) -> dict[str, dict[str, Any]]:
    """For each source group and policy with positives: how many there are and the share flagged."""
    out: dict[str, dict[str, Any]] = {}
    y = targets_of(examples)
    groups = np.array([e.group for e in examples])
    for group in sorted(set(groups)):
        rows = groups == group
        for p, policy in enumerate(POLICIES):
            positives = rows & (y[:, p] == 1)
            if positives.any():
                flagged = scores[positives, p] >= thresholds[p]
                out.setdefault(group, {})[policy] = {
                    "n": int(positives.sum()),
                    "recall": float(flagged.mean()),
                }
    return out


def false_positive_rate(scores: FloatArray, thresholds: list[float]) -> dict[str, Any]:
    """For prompts that violate no policy: the share flagged per policy and by any policy."""
    flagged = scores >= np.array(thresholds, dtype=np.float32)
    report: dict[str, Any] = {"n": len(scores)}
    report.update({policy: float(flagged[:, p].mean()) for p, policy in enumerate(POLICIES)})
    report["any_policy"] = float(flagged.any(axis=1).mean())
    return report
