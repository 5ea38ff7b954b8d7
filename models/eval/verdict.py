"""`guardstream eval --verdict`: judge a guard the way a user does, on files with one `label` column.

A prompt is blocked when any policy flags it (score at or over the policy's threshold), as the
worker decides a verdict. Each file is a benchmark of its own: rows with `label` 1 should be
blocked, 0 allowed; other labels (-1, empty) are skipped. Per file and model: precision, recall,
F1, false-positive rate, AUPRC and recall at 1% FPR of the verdict, and beside them each policy's
own recall and false-positive rate against the same label (which policy blocks the benign texts).

The verdict's score, for AUPRC and the recall at a fixed FPR, is the largest margin of a policy
over its threshold in log-odds, max_p (logit(s_p) - logit(t_p)): it is >= 0 exactly when the
verdict is `block`, and orders prompts as the worker's decision would at any common shift of the
thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.base.contract import FloatArray, GuardModel
from models.base.text import normalize_text
from models.train.files import DataFileError, parse_label, read_rows
from models.train.metrics import binary_metrics, recall_at_fpr

LabelArray = npt.NDArray[np.int64]
#: The false-positive rate at which `recall_at_1pct_fpr` is read.
LOW_FPR = 0.01
_EPSILON = 1e-6


@dataclass(frozen=True)
class LabeledFile:
    """The prompts of one benchmark file with their verdict labels (1 block, 0 allow) and categories."""

    path: Path
    texts: list[str]
    labels: LabelArray
    categories: list[str]

    @property
    def name(self) -> str:
        return self.path.stem


def load_labeled_file(path: Path, text_column: str = "text", label_column: str = "label") -> LabeledFile:
    """The rows of `path` whose label is 0 or 1, normalized as the worker normalizes them."""
    texts, labels, categories = [], [], []
    for number, row in read_rows(path):
        where = f"{path}:{number}"
        if text_column not in row or label_column not in row:
            raise DataFileError(f"{where}: needs a {text_column!r} and a {label_column!r} column")
        label = parse_label(row[label_column], where)
        text = normalize_text(str(row[text_column] or ""))
        if label in (0, 1) and text:
            texts.append(text)
            labels.append(label)
            categories.append(str(row.get("category") or ""))
    if not texts:
        raise DataFileError(f"{path}: no rows labeled 0 or 1")
    return LabeledFile(path, texts, np.array(labels, dtype=np.int64), categories)


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(p.astype(np.float64), _EPSILON, 1 - _EPSILON)
    return np.log(clipped / (1 - clipped)).astype(np.float32)


def verdict_scores(scores: FloatArray, thresholds: Sequence[float]) -> FloatArray:
    """max over policies of logit(score) - logit(threshold): >= 0 exactly when a policy flags."""
    t = np.asarray(thresholds, dtype=np.float32)
    margins = _logit(scores) - _logit(t)
    # A score at its threshold flags: keep it >= 0 despite the clipping above.
    margins = np.where(scores >= t, np.maximum(margins, 0.0), np.minimum(margins, -_EPSILON))
    verdict: FloatArray = margins.max(axis=1).astype(np.float32)
    return verdict


def _figures(labels: LabelArray, scores: FloatArray, threshold: float) -> dict[str, float]:
    figures = binary_metrics(labels, scores, threshold)
    figures["recall_at_1pct_fpr"] = recall_at_fpr(labels, scores, LOW_FPR)
    return figures


def by_category(
    labels: LabelArray, blocked: npt.NDArray[np.bool_], categories: Sequence[str], depth: int
) -> dict[str, dict[str, float]]:
    """Per category (its first `depth` `|`-separated fields): rows and the share blocked."""
    keys = ["|".join(c.split("|")[:depth]) for c in categories]
    out: dict[str, dict[str, float]] = {}
    for key in sorted(set(keys)):
        rows = np.array([k == key for k in keys])
        for label, name in ((1, "unsafe"), (0, "safe")):
            chosen = rows & (labels == label)
            if chosen.any():
                out[f"{key} ({name})"] = {"n": int(chosen.sum()), "blocked": float(blocked[chosen].mean())}
    return out


def verdict_report(
    model: GuardModel, data: LabeledFile, scores: FloatArray, category_depth: int = 0
) -> dict[str, Any]:
    """The verdict's figures and each policy's own recall and FPR against the file's label."""
    thresholds = [p.threshold for p in model.info.policies]
    verdict = verdict_scores(scores, thresholds)
    report: dict[str, Any] = {
        "file": str(data.path),
        "verdict": _figures(data.labels, verdict, 0.0),
        "policies": {
            policy.id: {
                key: value
                for key, value in binary_metrics(data.labels, scores[:, p], policy.threshold).items()
                if key in ("recall", "fpr")
            }
            for p, policy in enumerate(model.info.policies)
        },
    }
    if category_depth > 0:
        report["by_category"] = by_category(data.labels, verdict >= 0.0, data.categories, category_depth)
    return report


def format_verdict_table(results: Sequence[dict[str, Any]]) -> str:
    """One line per model and file, then one line per policy of what it blocks."""
    columns = ("precision", "recall", "f1", "fpr", "auprc", "recall_at_1pct_fpr")
    header = f"{'file':<34} {'model':<26} " + " ".join(f"{c[:10]:>10}" for c in columns)
    lines = [header, "-" * len(header)]
    for result in results:
        name = f"{result['model']['name']} {result['model']['version']}"
        for report in result["files"]:
            verdict = report["verdict"]
            file_name = Path(report["file"]).stem
            lines.append(
                f"{file_name[:34]:<34} {name[:26]:<26} " + " ".join(f"{verdict[c]:>10.3f}" for c in columns)
            )
            for policy, figures in report["policies"].items():
                lines.append(
                    f"{'':<34} {'  ' + policy:<26} {'':>10} {figures['recall']:>10.3f} {'':>10} "
                    f"{figures['fpr']:>10.3f}"
                )
    return "\n".join(lines)
