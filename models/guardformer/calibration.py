"""Per-policy calibration of a GuardFormer's scores: one shift in logit space per trained policy.

A GuardFormer's raw probability for a policy is not always best cut at the policy's threshold:
a topic policy with few training prompts can have its best validation F1 far below 0.5.
Calibration moves each measured policy's scores so that its best-F1 threshold on validation
lands on the policy's own threshold:

    calibrated = sigmoid(logit(score) + shift),  shift = logit(policy threshold) - logit(best threshold)

The order of the scores is unchanged (AUPRC too); only where the threshold cuts moves. A shift
applies only while the policy's words are the ones it was measured with (same fingerprint): a
reworded or new policy gets the shift for unseen policies when the directory has one (key
`UNSEEN`: one shift chosen on policies held out of training, `python -m models.calibrate
--unseen`, so that it holds out of sample), else it is scored raw. `config.json` keeps the
shifts under "calibration": `{policy_id: {"fingerprint", "best_threshold", "policy_threshold",
"shift"}, "*": {"shift", "chosen_on", ...}}`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from models.base.contract import FloatArray, Policy
from models.policies import PolicyDefinition

#: Best thresholds are clipped into this range: a handful of validation prompts must not turn
#: into an extreme shift.
THRESHOLD_RANGE = (0.02, 0.98)
#: The calibration key of the shift for every policy without a valid entry of its own.
UNSEEN = "*"
_EPS = 1e-7


def logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def calibration_entries(
    policies: Iterable[PolicyDefinition], best_thresholds: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """The "calibration" block for the policies that have a measured best threshold."""
    low, high = THRESHOLD_RANGE
    entries: dict[str, dict[str, Any]] = {}
    for policy in policies:
        if policy.id not in best_thresholds:
            continue
        best = min(max(float(best_thresholds[policy.id]), low), high)
        entries[policy.id] = {
            "fingerprint": policy.fingerprint,
            "best_threshold": round(best, 6),
            "policy_threshold": policy.threshold,
            "shift": round(logit(policy.threshold) - logit(best), 6),
        }
    return entries


def unseen_entry(shift: float, chosen_on: Sequence[str], figures: Mapping[str, float]) -> dict[str, Any]:
    """The entry for unseen policies: a logit shift, the held-out policies it was chosen on and
    what it did there (mean F1 and false alarms before and after)."""
    rounded = {name: value if isinstance(value, int) else round(value, 4) for name, value in figures.items()}
    return {"shift": round(float(shift), 6), "chosen_on": list(chosen_on), **rounded}


def shifts_for(policies: Sequence[Policy], calibration: Mapping[str, Any]) -> FloatArray:
    """Per column of `policies`, its shift: its own while its words are unchanged, else the shift
    for unseen policies (0 when the directory has none)."""
    unseen = calibration.get(UNSEEN)
    default = float(unseen["shift"]) if isinstance(unseen, Mapping) else 0.0
    shifts = np.full(len(policies), default, dtype=np.float32)
    for column, policy in enumerate(policies):
        entry = calibration.get(policy.id)
        if isinstance(entry, Mapping) and entry.get("fingerprint") == policy.fingerprint:
            shifts[column] = float(entry["shift"])
    return shifts


def apply_shifts(scores: FloatArray, shifts: FloatArray) -> FloatArray:
    """`scores` [n, policies] moved by `shifts` [policies] in logit space (NaN stays NaN)."""
    if not shifts.any():
        return scores
    clipped = np.clip(scores.astype(np.float64), _EPS, 1 - _EPS)
    moved = 1.0 / (1.0 + np.exp(-(np.log(clipped / (1 - clipped)) + shifts)))
    return np.where(np.isnan(scores), np.nan, moved).astype(np.float32)
