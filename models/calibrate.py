"""Calibrate a GuardFormer model directory on validation prompts (after merging, or for an older model).

    python -m models.calibrate MODEL_DIR --data-dir ../shared/data
    python -m models.calibrate MODEL_DIR --rows synthetic.jsonl --policy-files my-policy.yaml

Scores the validation pairs of each policy the model was trained on (its config's
`trained_policies`, or `--only`) through ONNX Runtime as the worker does, finds each policy's
best-F1 threshold and writes the shifts into the directory's config.json (see
`models.guardformer.calibration`). `guardstream train --model guardformer` does this itself.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.base.directory import CONFIG_FILE
from models.base.packing import score_items
from models.guardformer.calibration import calibration_entries
from models.guardformer.config import GuardFormerConfig
from models.guardformer.guard import GuardFormerGuard
from models.policies import PolicyError, PolicySet
from models.train.guardformer_data import (
    TRAINING_POLICY_FILES,
    Pair,
    all_policies,
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
    args = parser.parse_args(argv)
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
