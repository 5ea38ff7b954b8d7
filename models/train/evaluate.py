"""Prompt-level evaluation of a trained head: scores are the maximum over a prompt's windows.

Every function takes the policy ids in the order of the score columns, so the same code serves
the shipped two-policy head and heads trained on user files with any policies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.base.contract import FloatArray
from models.base.mlp_head import MlpHead
from models.train import protocol
from models.train.data import Example
from models.train.embed import WindowEmbeddings
from models.train.metrics import binary_metrics, fpr_threshold, max_f1_threshold

log = logging.getLogger(__name__)

TargetArray = npt.NDArray[np.int64]
#: Threshold of a policy whose validation data cannot calibrate one (a single class).
DEFAULT_THRESHOLD = 0.5


def prompt_scores(head: MlpHead, embeddings: WindowEmbeddings, n_prompts: int) -> FloatArray:
    """[n_prompts, n_policies]: per prompt, the maximum of the head's outputs over its windows."""
    window_scores = head.predict(embeddings.vectors)
    starts = np.searchsorted(embeddings.doc, np.arange(n_prompts))
    return np.maximum.reduceat(window_scores, starts, axis=0)


def targets_of(examples: Sequence[Example], n_policies: int) -> TargetArray:
    return np.array([e.targets for e in examples], dtype=np.int64).reshape(-1, n_policies)


def _calibrate_one(y: TargetArray, scores: FloatArray, target_fpr: float | None, policy: str) -> float:
    known = y[y >= 0]
    if not 0 < known.sum() < len(known):
        log.warning(
            "%s: validation data has %d positives and %d negatives; threshold left at %s",
            policy,
            int(known.sum()),
            int(len(known) - known.sum()),
            DEFAULT_THRESHOLD,
        )
        return DEFAULT_THRESHOLD
    if target_fpr is not None:
        return fpr_threshold(y, scores, target_fpr)
    return max_f1_threshold(y, scores)


def per_policy(
    y: TargetArray, scores: FloatArray, thresholds: Sequence[float], policies: Sequence[str]
) -> dict[str, Any]:
    """`binary_metrics` of every policy with at least one known target."""
    return {
        policy: binary_metrics(y[:, p], scores[:, p], thresholds[p])
        for p, policy in enumerate(policies)
        if (y[:, p] >= 0).any()
    }


def recall_by_group(
    examples: Sequence[Example], scores: FloatArray, thresholds: Sequence[float], policies: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """For each source group and policy with positives: how many there are and the share flagged."""
    out: dict[str, dict[str, Any]] = {}
    y = targets_of(examples, len(policies))
    groups = np.array([e.group for e in examples])
    for group in sorted(set(groups)):
        rows = groups == group
        for p, policy in enumerate(policies):
            positives = rows & (y[:, p] == 1)
            if positives.any():
                flagged = scores[positives, p] >= thresholds[p]
                out.setdefault(group, {})[policy] = {
                    "n": int(positives.sum()),
                    "recall": float(flagged.mean()),
                }
    return out


def false_positive_rate(
    scores: FloatArray, thresholds: Sequence[float], policies: Sequence[str]
) -> dict[str, Any]:
    """For prompts that violate no policy: the share flagged per policy and by any policy."""
    flagged = scores >= np.array(thresholds, dtype=np.float32)
    report: dict[str, Any] = {"n": len(scores)}
    report.update({policy: float(flagged[:, p].mean()) for p, policy in enumerate(policies)})
    report["any_policy"] = float(flagged.any(axis=1).mean())
    return report


def split_rows(examples: Sequence[Example], split: str) -> npt.NDArray[np.int64]:
    """Indices of the examples in `split`."""
    return np.array([i for i, e in enumerate(examples) if e.split == split], dtype=np.int64)


def benign_groups(examples: Sequence[Example]) -> list[str]:
    """The hand-written benign groups (their names start with `benign_`)."""
    return sorted({e.group for e in examples if e.group.startswith("benign_")})


def calibrate(
    examples: Sequence[Example],
    scores: FloatArray,
    policies: Sequence[str],
    fpr_budget: float | None,
    target_fpr: float | None = None,
) -> tuple[list[float], dict[str, str]]:
    """One threshold per policy, and how it was set.

    With `fpr_budget`, on the held-out sources (`models.train.protocol.budget_threshold`) for
    every policy they have negatives for; otherwise (or without held-out rows) on the validation
    split: the lowest threshold within `target_fpr`, or the one with the best F1.
    """
    y = targets_of(examples, len(policies))
    groups = protocol.rows_by_group(examples, "heldout")
    val = split_rows(examples, "validation")
    thresholds, methods = [], {}
    for p, policy in enumerate(policies):
        threshold = None
        if fpr_budget is not None:
            threshold = protocol.budget_threshold(y[:, p], scores[:, p], groups, fpr_budget)
            methods[policy] = f"held-out sources: mean per-source FPR <= {fpr_budget}"
        if threshold is None:
            threshold = _calibrate_one(y[val, p], scores[val, p], target_fpr, policy)
            methods[policy] = (
                f"validation split: FPR <= {target_fpr}"
                if target_fpr is not None
                else "validation split: max F1"
            )
        thresholds.append(threshold)
    return thresholds, methods


def calibrate_and_report(
    examples: Sequence[Example],
    scores: FloatArray,
    policies: Sequence[str],
    fpr_budget: float | None,
    target_fpr: float | None = None,
) -> tuple[list[float], dict[str, Any]]:
    """Thresholds (see `calibrate`), then figures in distribution (validation and test splits of
    the training sources) and out of source (each held-out source), and on hand-written benign
    prompts."""
    y = targets_of(examples, len(policies))
    thresholds, methods = calibrate(examples, scores, policies, fpr_budget, target_fpr)
    val, test, heldout = (split_rows(examples, s) for s in ("validation", "test", "heldout"))
    report: dict[str, Any] = {
        "thresholds": dict(zip(policies, thresholds, strict=True)),
        "calibration": methods,
        "validation": per_policy(y[val], scores[val], thresholds, policies),
        "test": per_policy(y[test], scores[test], thresholds, policies),
        "test_recall_by_source": recall_by_group(
            [examples[i] for i in test], scores[test], thresholds, policies
        ),
    }
    if len(heldout):
        report["heldout"] = per_policy(y[heldout], scores[heldout], thresholds, policies)
        groups = protocol.rows_by_group(examples, "heldout")
        report["heldout_sources"] = protocol.heldout_report(y, scores, thresholds, groups, policies)
    for group in benign_groups(examples):
        rows = np.array([i for i in test if examples[i].group == group], dtype=np.int64)
        if len(rows):
            report[f"{group}_test_fpr"] = false_positive_rate(scores[rows], thresholds, policies)
    return thresholds, report
