"""Out-of-source validation: thresholds for a false-positive budget, and the selection score.

A guard is judged by its false-positive rate on other people's text at a useful recall, so the
model's choices are made on held-out sources (`split == "heldout"`, sources never trained on),
never on the sources it trained on:

- threshold of a policy: the lowest one at which the false-positive rate on held-out text that
  does not violate the policy, averaged over the held-out sources (each source counts the same,
  whatever its size), is at most the budget (`DEFAULT_FPR_BUDGET` per policy);
- selection score of a model: at those thresholds, the recall on each held-out source with
  positives, averaged over sources, then over policies. Models, epochs and head settings are
  compared by it.

Figures on the held-out sources are therefore not an unbiased test (the thresholds were set
there): that needs sources used for neither training nor choosing, scored only by
`guardstream eval --verdict`, never by these tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.base.contract import FloatArray
from models.train.data import Example

IntArray = npt.NDArray[np.int64]
DEFAULT_FPR_BUDGET = 0.05
#: A held-out source counts for a policy's recall or false-positive rate with at least this many rows.
MIN_SOURCE_ROWS = 20


def rows_by_group(examples: Sequence[Example], split: str = "heldout") -> dict[str, IntArray]:
    """Indices of the examples of `split`, per source group."""
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        if example.split == split:
            groups.setdefault(example.group, []).append(index)
    return {group: np.array(rows, dtype=np.int64) for group, rows in sorted(groups.items())}


def _negatives_by_group(y: IntArray, scores: FloatArray, groups: dict[str, IntArray]) -> list[FloatArray]:
    out = []
    for rows in groups.values():
        negatives = scores[rows][y[rows] == 0]
        if len(negatives) >= MIN_SOURCE_ROWS:
            out.append(np.sort(negatives))
    return out


def mean_fpr(negatives: Sequence[FloatArray], threshold: float) -> float:
    """Mean over sources of the share of negatives scored at or over `threshold`."""
    rates = [1.0 - np.searchsorted(n, threshold, side="left") / len(n) for n in negatives]
    return float(np.mean(rates))


def budget_threshold(
    y: IntArray, scores: FloatArray, groups: dict[str, IntArray], budget: float
) -> float | None:
    """The lowest threshold whose mean per-source false-positive rate is at most `budget`.

    `y` and `scores` are one policy's columns over all examples; None when no held-out source
    has enough negatives for the policy.
    """
    negatives = _negatives_by_group(y, scores, groups)
    if not negatives:
        return None
    if mean_fpr(negatives, 0.0) <= budget:
        return 0.0
    # Candidates: just above each negative score; the mean FPR falls as the threshold rises.
    candidates = np.unique(np.concatenate(negatives)).astype(np.float32)
    candidates = np.nextafter(candidates, np.float32(np.inf))
    low, high = 0, len(candidates) - 1
    while low < high:
        middle = (low + high) // 2
        if mean_fpr(negatives, float(candidates[middle])) <= budget:
            high = middle
        else:
            low = middle + 1
    return float(candidates[low])


def source_figures(
    y: IntArray, scores: FloatArray, threshold: float, groups: dict[str, IntArray]
) -> dict[str, dict[str, float]]:
    """Per held-out source: positives and recall, negatives and false-positive rate, at `threshold`."""
    out: dict[str, dict[str, float]] = {}
    for group, rows in groups.items():
        known, flagged = y[rows], scores[rows] >= threshold
        figures: dict[str, float] = {}
        positives, negatives = known == 1, known == 0
        if positives.any():
            figures.update(n_positive=int(positives.sum()), recall=float(flagged[positives].mean()))
        if negatives.any():
            figures.update(n_negative=int(negatives.sum()), fpr=float(flagged[negatives].mean()))
        if figures:
            out[group] = figures
    return out


def macro(figures: dict[str, dict[str, float]], key: str, count: str) -> float:
    """Mean of `key` over the sources with at least `MIN_SOURCE_ROWS` rows of `count`."""
    values = [f[key] for f in figures.values() if f.get(count, 0) >= MIN_SOURCE_ROWS]
    return float(np.mean(values)) if values else float("nan")


def heldout_report(
    y: IntArray,
    scores: FloatArray,
    thresholds: Sequence[float],
    groups: dict[str, IntArray],
    policies: Sequence[str],
) -> dict[str, Any]:
    """Per policy: per-source figures and their macro averages; and the selection score."""
    report: dict[str, Any] = {}
    recalls = []
    for p, policy in enumerate(policies):
        figures = source_figures(y[:, p], scores[:, p], thresholds[p], groups)
        recall = macro(figures, "recall", "n_positive")
        report[policy] = {
            "macro_recall": recall,
            "macro_fpr": macro(figures, "fpr", "n_negative"),
            "sources": figures,
        }
        if not np.isnan(recall):
            recalls.append(recall)
    report["selection_score"] = float(np.mean(recalls)) if recalls else float("nan")
    return report
