"""What a merge run reports: every trial, the models compared, and a per-policy table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from models.merge.search import Trial

PolicyMetrics = Mapping[str, Mapping[str, float]]


def trial_record(trial: Trial, f1: Mapping[str, float]) -> dict[str, Any]:
    """One line of the report's trial list: the candidate, its mean F1 and each policy's F1."""
    return {
        "index": trial.index,
        **trial.candidate.as_dict(),
        "score": round(trial.score, 6),
        "f1": {policy: round(value, 6) for policy, value in f1.items()},
    }


def _cell(metrics: Mapping[str, float] | None) -> str:
    if metrics is None:
        return "-"
    auprc = metrics.get("auprc", math.nan)
    return f"{metrics['f1']:.3f} / {auprc:.3f}"


def comparison_table(policy_ids: Sequence[str], columns: Mapping[str, PolicyMetrics]) -> str:
    """Policies down, models across, "F1 / AUPRC" in each cell, the mean F1 in the last row."""
    names = list(columns)
    first = max([len("policy"), len("mean F1"), *map(len, policy_ids)])
    width = max([len("0.000 / 0.000"), *map(len, names)])
    lines = ["  ".join([f"{'policy':<{first}}", *(f"{n:>{width}}" for n in names)])]
    lines.append("-" * len(lines[0]))
    for policy in policy_ids:
        cells = [_cell(columns[n].get(policy)) for n in names]
        lines.append("  ".join([f"{policy:<{first}}", *(f"{c:>{width}}" for c in cells)]))
    means = []
    for name in names:
        values = [columns[name][p]["f1"] for p in policy_ids if p in columns[name]]
        means.append(f"{sum(values) / len(values):.3f}" if values else "-")
    lines.append("  ".join([f"{'mean F1':<{first}}", *(f"{m:>{width}}" for m in means)]))
    return "\n".join(lines)
