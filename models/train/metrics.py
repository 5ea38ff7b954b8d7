"""Per-policy metrics and threshold calibration (a prompt is flagged when score >= threshold)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from models.base.contract import FloatArray

BoolArray = npt.NDArray[np.bool_]


def _known(y: npt.NDArray[np.int64], scores: FloatArray) -> tuple[BoolArray, FloatArray]:
    mask = y >= 0
    return y[mask] == 1, scores[mask]


def binary_metrics(y: npt.NDArray[np.int64], scores: FloatArray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1, FPR, AUPRC and AUROC over the known targets."""
    truth, scores = _known(y, scores)
    flagged = scores >= threshold
    tp = int((flagged & truth).sum())
    fp = int((flagged & ~truth).sum())
    fn = int((~flagged & truth).sum())
    tn = int((~flagged & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both_classes = 0 < truth.sum() < len(truth)
    return {
        "n_positive": tp + fn,
        "n_negative": tn + fp,
        "accuracy": (tp + tn) / max(len(truth), 1),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "auprc": float(average_precision_score(truth, scores)) if both_classes else float("nan"),
        "auroc": float(roc_auc_score(truth, scores)) if both_classes else float("nan"),
    }


def max_f1_threshold(y: npt.NDArray[np.int64], scores: FloatArray) -> float:
    """The threshold with the highest F1."""
    truth, scores = _known(y, scores)
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def fpr_threshold(y: npt.NDArray[np.int64], scores: FloatArray, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate is at most `target_fpr`."""
    truth, scores = _known(y, scores)
    negatives = np.sort(scores[~truth])[::-1]
    allowed = int(np.floor(target_fpr * len(negatives)))
    if allowed >= len(negatives):
        return 0.0
    # Flag strictly above the (allowed+1)-th highest negative score.
    return float(np.nextafter(np.float32(negatives[allowed]), np.float32(np.inf)))


def recall_at_fpr(y: npt.NDArray[np.int64], scores: FloatArray, max_fpr: float) -> float:
    """The recall reached at the lowest threshold whose false-positive rate is at most `max_fpr`."""
    truth, known_scores = _known(y, scores)
    if not truth.any() or truth.all():
        return float("nan")
    threshold = fpr_threshold(y, scores, max_fpr)
    return float((known_scores[truth] >= threshold).mean())
