"""Calibrate a GuardFormer model directory on validation prompts (after merging, or for an older model).

    python -m models.calibrate MODEL_DIR --data-dir ../shared/data
    python -m models.calibrate MODEL_DIR --rows synthetic.jsonl --policy-files my-policy.yaml
    python -m models.calibrate MODEL_DIR --data-dir ../shared/data --unseen

Scores the validation pairs of each policy the model was trained on (its config's
`trained_policies`, or `--only`) through ONNX Runtime as the worker does, finds each policy's
best-F1 threshold and writes the shifts into the directory's config.json (see
`models.guardformer.calibration`). `guardstream train --model guardformer` does this itself.

`--unseen` chooses instead the one shift applied to every policy the model has no entry for (a
user's own policy): the shift that maximizes the mean F1, at each policy's threshold, of the
*selection* policies the model's training held out (its `train.json`; rows of the test split,
none trained on), among the shifts whose false alarms on 1,000 benign *validation* prompts stay
within `--max-benign-fpr` (3%) on average. The held-out *test* policies are never read, so
`python -m models.bench.heldout_policies` measures the shift on them out of sample.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.base.directory import CONFIG_FILE
from models.base.packing import score_items
from models.guardformer.calibration import UNSEEN, apply_shifts, calibration_entries, unseen_entry
from models.guardformer.config import GuardFormerConfig
from models.guardformer.guard import GuardFormerGuard
from models.policies import PolicyError, PolicySet
from models.train.guardformer_data import (
    HELDOUT_SELECTION_POLICIES,
    TRAINING_POLICY_FILES,
    Pair,
    all_policies,
    benign_pool,
    held_out_policies,
    hold_out,
    load_prompts,
    load_rows,
    make_pairs,
)
from models.train.guardformer_io import write_calibration
from models.train.metrics import binary_metrics, max_f1_threshold


def pair_scores(guard: GuardFormerGuard, pairs: list[Pair]) -> np.ndarray:
    """Raw (uncalibrated) score of each (policy, prompt) pair."""
    guard.shifts = np.zeros_like(guard.shifts)
    column = {pid: i for i, pid in enumerate(guard.info.policy_ids)}
    texts = sorted({p.text for p in pairs})
    row = {t: i for i, t in enumerate(texts)}
    encoded = guard.encode(texts)
    wanted: dict[str, set[int]] = {}
    for pair in pairs:
        wanted.setdefault(pair.text, set()).add(column[pair.policy])
    asked = [replace(e, columns=tuple(sorted(wanted[t]))) for e, t in zip(encoded, texts, strict=True)]
    scores = score_items(guard, asked)
    return np.asarray([scores[row[p.text], column[p.policy]] for p in pairs], dtype=np.float64)


def chosen_threshold(y: np.ndarray, scores: np.ndarray, max_fpr: float | None) -> float:
    """The best-F1 threshold, among those within `max_fpr` when given."""
    if max_fpr is None:
        return max_f1_threshold(y, scores)
    best_f1, best = -1.0, float(scores.max())
    for threshold in np.unique(scores):
        figures = binary_metrics(y, scores, float(threshold))
        if figures["fpr"] <= max_fpr and figures["f1"] > best_f1:
            best_f1, best = figures["f1"], float(threshold)
    return best


#: Benign validation prompts `--unseen` counts false alarms on.
BENIGN_PROMPTS = 1000
#: The logit shifts `--unseen` tries.
UNSEEN_SHIFTS = np.round(np.arange(-4.0, 4.01, 0.25), 2)


def mean_f1_by_shift(
    y: np.ndarray, scores: np.ndarray, groups: list[np.ndarray], thresholds: list[float]
) -> np.ndarray:
    """Per shift of `UNSEEN_SHIFTS`, the mean over `groups` (row indices of one policy) of F1."""
    out = np.zeros(len(UNSEEN_SHIFTS))
    for k, shift in enumerate(UNSEEN_SHIFTS):
        moved = _shifted(scores, shift)
        out[k] = np.mean(
            [binary_metrics(y[g], moved[g], t)["f1"] for g, t in zip(groups, thresholds, strict=True)]
        )
    return out


def mean_flagged_by_shift(benign: list[np.ndarray], thresholds: list[float]) -> np.ndarray:
    """Per shift of `UNSEEN_SHIFTS`, the mean over policies of the share of benign scores flagged."""
    if not benign:
        return np.zeros(len(UNSEEN_SHIFTS))
    return np.asarray(
        [
            np.mean([np.mean(_shifted(s, shift) >= t) for s, t in zip(benign, thresholds, strict=True)])
            for shift in UNSEEN_SHIFTS
        ]
    )


def pick_shift(f1: np.ndarray, benign_fpr: np.ndarray, max_benign_fpr: float) -> int:
    """The best mean F1 among the shifts within the benign bound (ties: the smallest shift); the
    fewest false alarms when none is within it."""
    within = benign_fpr <= max_benign_fpr
    if not within.any():
        return int(np.argmin(benign_fpr))
    return int(np.argmax(np.where(within, f1, -1.0) - 1e-6 * np.abs(UNSEEN_SHIFTS)))


def _shifted(scores: np.ndarray, shift: float) -> np.ndarray:
    moved = apply_shifts(scores[:, None].astype(np.float32), np.asarray([shift], dtype=np.float32))
    return np.asarray(moved[:, 0])


def calibrate_unseen(model_dir: Path, data_dir: Path, max_benign_fpr: float) -> int:
    """Choose and write the shift for unseen policies on the held-out selection policies."""
    held = held_out_policies(model_dir)
    selection = [pid for pid in held if pid in HELDOUT_SELECTION_POLICIES]
    if not selection:
        raise ValueError(f"{model_dir}: its training held out none of the selection policies")
    definitions = all_policies(TRAINING_POLICY_FILES)
    chosen = PolicySet(tuple(definitions[pid] for pid in selection))
    prompts = load_prompts(data_dir)
    hold_out(prompts, held)
    guard = GuardFormerGuard.load(model_dir, chosen, device="cpu")
    pairs = [pair for pid in selection for pair in make_pairs(prompts, [pid], "test", 300, 2.0, seed=1)]
    scores = pair_scores(guard, pairs)
    y = np.asarray([p.violation for p in pairs])
    groups = [np.asarray([i for i, p in enumerate(pairs) if p.policy == pid]) for pid in selection]
    f1 = mean_f1_by_shift(y, scores, groups, [p.threshold for p in chosen])
    restrictions = [p for p in chosen if not p.is_scope]  # benign text is off a scope's topic
    benign = benign_pool(prompts, BENIGN_PROMPTS, split="validation")
    flagged = pair_scores(guard, [Pair(p.id, text, 0, "validation") for p in restrictions for text in benign])
    per_policy = np.split(flagged, len(restrictions)) if restrictions else []
    benign_fpr = mean_flagged_by_shift(per_policy, [p.threshold for p in restrictions])
    best, raw = pick_shift(f1, benign_fpr, max_benign_fpr), list(UNSEEN_SHIFTS).index(0.0)
    for k, shift in enumerate(UNSEEN_SHIFTS):
        mark = "  <- chosen" if k == best else ""
        print(f"shift {shift:+.2f}: mean F1 {f1[k]:.3f}, mean benign FPR {benign_fpr[k]:.3f}{mark}")
    figures = {
        "mean_f1_raw": float(f1[raw]),
        "mean_f1_shifted": float(f1[best]),
        "mean_benign_fpr_raw": float(benign_fpr[raw]),
        "mean_benign_fpr_shifted": float(benign_fpr[best]),
        "max_benign_fpr": max_benign_fpr,
        "benign_prompts": len(benign),
    }
    entry = unseen_entry(float(UNSEEN_SHIFTS[best]), selection, figures)
    write_calibration(model_dir, {UNSEEN: entry})
    print(
        f"unseen policies: shift {entry['shift']:+.2f}; on {len(selection)} selection policies mean F1 "
        f"{f1[raw]:.3f} -> {f1[best]:.3f}, mean benign FPR {benign_fpr[raw]:.3f} -> {benign_fpr[best]:.3f}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", type=Path, help="a GuardFormer / PolicyGuard model directory")
    parser.add_argument("--data-dir", type=Path, help="the shared datasets (validation split)")
    parser.add_argument("--rows", type=Path, action="append", help="rows files (their validation split)")
    parser.add_argument("--policy-files", type=Path, nargs="+", help="[the starter set + the GIP policies]")
    parser.add_argument("--only", nargs="+", help="calibrate these policies [the model's trained ones]")
    parser.add_argument("--max-positives", type=int, default=300, help="per policy [300]")
    parser.add_argument(
        "--max-fpr",
        type=float,
        help="the best-F1 threshold among those whose validation false-positive rate is at most this",
    )
    parser.add_argument(
        "--unseen",
        action="store_true",
        help="choose the shift for policies the model has no entry for, on its held-out selection policies",
    )
    parser.add_argument(
        "--max-benign-fpr",
        type=float,
        default=0.03,
        help="--unseen: the best mean F1 among the shifts that flag at most this share of benign "
        "validation prompts, on average over the policies [0.03]",
    )
    args = parser.parse_args(argv)
    if args.unseen:
        if args.data_dir is None:
            print("calibrate: --unseen needs --data-dir", file=sys.stderr)
            return 2
        try:
            return calibrate_unseen(args.model_dir, args.data_dir, args.max_benign_fpr)
        except (OSError, ValueError, KeyError) as exc:
            print(f"calibrate: {exc}", file=sys.stderr)
            return 2
    if (args.data_dir is None) == (args.rows is None):
        print("calibrate: give --data-dir or --rows", file=sys.stderr)
        return 2
    try:
        policies = all_policies(args.policy_files or TRAINING_POLICY_FILES)
        config = GuardFormerConfig.load(args.model_dir / CONFIG_FILE)
        trained = args.only or [str(p["id"]) for p in config.trained_policies]
        chosen = PolicySet(tuple(policies[pid] for pid in trained if pid in policies))
        if not len(chosen):
            raise PolicyError(f"none of {', '.join(trained) or 'no policies'} is in the policy files")
        prompts = load_rows(args.rows) if args.rows else load_prompts(args.data_dir, example_policies=chosen)
    except (OSError, ValueError, KeyError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    pairs = make_pairs(prompts, list(chosen.ids), "validation", args.max_positives, 2.0, seed=1)
    guard = GuardFormerGuard.load(args.model_dir, chosen, device="cpu")
    scores = pair_scores(guard, pairs)
    best: dict[str, float] = {}
    for policy in chosen:
        rows = [i for i, p in enumerate(pairs) if p.policy == policy.id]
        y = np.asarray([pairs[i].violation for i in rows])
        if len(set(y.tolist())) < 2:
            print(f"{policy.id}: validation lacks one class; left raw", flush=True)
            continue
        best[policy.id] = chosen_threshold(y, scores[rows], args.max_fpr)
        before = binary_metrics(y, scores[rows], policy.threshold)["f1"]
        after = binary_metrics(y, scores[rows], best[policy.id])["f1"]
        print(f"{policy.id}: best threshold {best[policy.id]:.3f}, validation F1 {before:.3f} -> {after:.3f}")
    write_calibration(args.model_dir, calibration_entries(chosen, best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
