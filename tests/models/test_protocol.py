"""Out-of-source thresholds and the selection score (models.train.protocol), on made-up scores."""

from __future__ import annotations

import numpy as np
import pytest

from models.train.data import Example
from models.train.evaluate import calibrate
from models.train.protocol import budget_threshold, heldout_report, mean_fpr, rows_by_group


def _groups(**sizes: int) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = np.arange(start, start + size)
        start += size
    return out


def test_budget_is_met_on_the_mean_of_sources_not_on_the_pooled_rows() -> None:
    # A small source whose benign texts all score high, and a large clean one.
    hard = np.full(40, 0.9, dtype=np.float32)
    easy = np.linspace(0.0, 0.5, 400, dtype=np.float32)
    scores = np.concatenate([hard, easy])
    y = np.zeros(len(scores), dtype=np.int64)
    groups = _groups(hard=40, easy=400)
    threshold = budget_threshold(y, scores, groups, budget=0.05)
    assert threshold is not None and threshold > 0.9  # pooled, 40/440 = 9% would allow flagging them
    negatives = [np.sort(hard), np.sort(easy)]
    assert mean_fpr(negatives, threshold) <= 0.05


def test_budget_threshold_is_the_lowest_that_meets_the_budget() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(1000).astype(np.float32)
    y = np.zeros(1000, dtype=np.int64)
    groups = _groups(a=500, b=500)
    threshold = budget_threshold(y, scores, groups, budget=0.1)
    assert threshold is not None
    negatives = [np.sort(scores[:500]), np.sort(scores[500:])]
    assert mean_fpr(negatives, threshold) <= 0.1
    below = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    assert mean_fpr(negatives, below) > 0.1


def test_no_threshold_without_enough_heldout_negatives() -> None:
    y = np.array([1] * 30 + [0] * 5, dtype=np.int64)
    scores = np.linspace(0, 1, 35, dtype=np.float32)
    assert budget_threshold(y, scores, _groups(only=35), budget=0.05) is None


def test_selection_score_is_the_macro_recall_over_sources_and_policies() -> None:
    y = np.zeros((100, 2), dtype=np.int64)
    y[:50, 0] = 1  # source a: 50 positives of policy 0 ...
    y[50:, 1] = 1  # ... source b: 50 positives of policy 1
    scores = np.zeros((100, 2), dtype=np.float32)
    scores[:25, 0] = 1.0  # half of a's positives found
    scores[50:, 1] = 1.0  # all of b's
    report = heldout_report(y, scores, [0.5, 0.5], _groups(a=50, b=50), ["p0", "p1"])
    assert report["p0"]["macro_recall"] == pytest.approx(0.5)
    assert report["p1"]["macro_recall"] == pytest.approx(1.0)
    assert report["p0"]["sources"]["b"]["fpr"] == 0.0
    assert report["selection_score"] == pytest.approx(0.75)


def test_calibration_uses_heldout_sources_and_falls_back_to_validation() -> None:
    rng = np.random.default_rng(1)
    examples = [Example(f"v{i}", (i % 2, 0), "validation", "val") for i in range(200)]
    examples += [Example(f"h{i}", (0, 0), "heldout", f"src{i % 2}") for i in range(200)]
    scores = rng.random((400, 2)).astype(np.float32)
    scores[:200, 0] = np.array([e.targets[0] for e in examples[:200]]) * 0.5 + 0.25  # separable
    thresholds, methods = calibrate(examples, scores, ["p0", "p1"], fpr_budget=0.05)
    assert methods["p0"].startswith("held-out") and methods["p1"].startswith("held-out")
    groups = rows_by_group(examples)
    assert set(groups) == {"src0", "src1"}
    without_heldout = [e for e in examples if e.split != "heldout"]
    thresholds, methods = calibrate(without_heldout, scores[:200], ["p0", "p1"], fpr_budget=0.05)
    assert methods["p0"] == "validation split: max F1"
    assert 0.25 <= thresholds[0] <= 0.75
