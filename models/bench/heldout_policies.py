r"""GuardFormer on policies it never trained on: F1 per held-out policy, and false alarms on benign text.

    python -m models.bench.heldout_policies GUARDFORMER_DIR [MORE_DIRS ...] --data-dir ../shared/data \
        [--out models/results/guardformer-heldout.json]

The policies measured are those the first directory's `train.json` held out of training
(`guardstream train --model guardformer --holdout-policies`), in two groups
(`models.train.guardformer_data`): the *selection* policies, on which training settings may be
compared, and the *test* policies, which are only reported. None of their rows was trained on
(`hold_out`). Per model and policy, on that policy's pairs (its prompts, its written look-alikes
first, then other prompts; `make_pairs`): F1, precision, recall and false-positive rate at the
policy's threshold, AUPRC and the best F1 over thresholds. Then the false-positive rate of the
policy on a pool of benign test prompts of every source (no policy and no harm known of them),
at the same threshold (not for a scope policy: text of other sources is off its topic, a violation).
Scores come from ONNX Runtime, as the worker computes them: with the model's shift for unseen
policies when it has one (`python -m models.calibrate --unseen`, chosen on the selection
policies only), and the same figures without it (`*_raw`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.bench.guardformer import policy_metrics, score_texts
from models.guardformer.calibration import apply_shifts
from models.guardformer.guard import GuardFormerGuard
from models.policies import PolicyDefinition, PolicySet
from models.train.guardformer_data import (
    HELDOUT_SELECTION_POLICIES,
    HELDOUT_TEST_POLICIES,
    TRAINING_POLICY_FILES,
    Prompt,
    all_policies,
    benign_pool,
    held_out_policies,
    hold_out,
    load_prompts,
    make_pairs,
)

GROUPS = {"selection": HELDOUT_SELECTION_POLICIES, "test": HELDOUT_TEST_POLICIES}


def measure_policy(
    model: GuardFormerGuard, policy: PolicyDefinition, prompts: Sequence[Prompt], benign: list[str]
) -> dict[str, Any] | None:
    pairs = make_pairs(prompts, [policy.id], "test", 300, 2.0, seed=1)
    y = np.asarray([p.violation for p in pairs], dtype=np.int64)
    if len(set(y.tolist())) < 2:
        return None
    guard = model.with_policies(PolicySet((policy,)))
    shift = guard.shifts
    scores = score_texts(guard, [p.text for p in pairs])
    result: dict[str, Any] = dict(policy_metrics(y, scores[:, 0], policy.threshold))
    result["shift"] = float(shift[0])
    result["f1_raw"] = policy_metrics(y, apply_shifts(scores, -shift)[:, 0], policy.threshold)["f1"]
    if policy.is_scope:  # benign text of other sources is off topic: a violation, not a false alarm
        result["benign_fpr"] = result["benign_fpr_raw"] = None
        return result
    benign_scores = score_texts(guard, benign)
    result["benign_fpr"] = float(np.mean(benign_scores[:, 0] >= policy.threshold))
    result["benign_fpr_raw"] = float(np.mean(apply_shifts(benign_scores, -shift)[:, 0] >= policy.threshold))
    result["benign_prompts"] = len(benign)
    return result


def summary(report: dict[str, dict[str, Any]], model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, ids in GROUPS.items():
        rows = [report[pid][model] for pid in ids if pid in report and model in report[pid]]
        if rows:
            out[group] = {
                "policies": len(rows),
                "mean_f1": round(float(np.mean([r["f1"] for r in rows])), 4),
                "mean_fpr": round(float(np.mean([r["fpr"] for r in rows])), 4),
                "mean_benign_fpr": _mean_of_known([r["benign_fpr"] for r in rows]),
                "mean_f1_raw": round(float(np.mean([r["f1_raw"] for r in rows])), 4),
                "mean_benign_fpr_raw": _mean_of_known([r["benign_fpr_raw"] for r in rows]),
                "mean_auprc": round(float(np.mean([r["auprc"] for r in rows])), 4),
            }
    return out


def _mean_of_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(float(np.mean(known)), 4) if known else None


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(report: dict[str, Any], model: str) -> str:
    """The per-policy table of one model, as the model card shows it."""
    lines = [
        "| policy | group | test positives / negatives | F1 | precision | recall | FPR | AUPRC | "
        "benign FPR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pid, entry in report["policies"].items():
        r = entry.get(model)
        if r is None:
            continue
        lines.append(
            f"| {pid} | {entry['group']} | {r['n_positive']} / {r['n_negative']} | {r['f1']:.3f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['fpr']:.3f} | {r['auprc']:.3f} | "
            f"{_figure(r['benign_fpr'])} |"
        )
    for group, figures in report["summary"][model].items():
        lines.append(
            f"| **mean, {group}** | | {figures['policies']} policies | {figures['mean_f1']:.3f} | | | "
            f"{figures['mean_fpr']:.3f} | {figures['mean_auprc']:.3f} | "
            f"{_figure(figures['mean_benign_fpr'])} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    held = held_out_policies(args.models[0])
    definitions = all_policies(TRAINING_POLICY_FILES)
    prompts = load_prompts(args.data_dir)
    hold_out(prompts, held)
    benign = benign_pool(prompts, args.benign, split="test")
    first = PolicySet((definitions[held[0]],))
    models = {m: GuardFormerGuard.load(m, first, device="cpu", cache_dir=args.cache_dir) for m in args.models}
    report: dict[str, dict[str, Any]] = {}
    for pid in held:
        group = next((name for name, ids in GROUPS.items() if pid in ids), "other")
        report[pid] = {"group": group}
        for model_dir, model in models.items():
            result = measure_policy(model, definitions[pid], prompts, benign)
            if result is None:
                report[pid]["skipped"] = "no positives or no negatives in the test split"
                break
            report[pid][model_dir.name] = result
            print(
                f"{pid} [{group}] {model_dir.name}: F1 {result['f1']:.3f} FPR {result['fpr']:.3f} "
                f"benign FPR {_figure(result['benign_fpr'])} AUPRC {result['auprc']:.3f}",
                flush=True,
            )
    return {
        "command": "python -m models.bench.heldout_policies " + " ".join(args.argv),
        "held_out": held,
        "groups": {name: list(ids) for name, ids in GROUPS.items()},
        "benign_prompts": len(benign),
        "policies": report,
        "summary": {m.name: summary(report, m.name) for m in args.models},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, nargs="+", help="trained GuardFormer directories")
    parser.add_argument("--data-dir", type=Path, required=True, help="the shared datasets")
    parser.add_argument("--benign", type=int, default=1000, help="benign test prompts for the FPR [1000]")
    parser.add_argument("--cache-dir", type=Path, help="ONNX build cache")
    parser.add_argument("--out", type=Path, default=Path("models/results/guardformer-heldout.json"))
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if not args.data_dir.is_dir():
        print(f"error: no data directory {args.data_dir} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    try:
        report = run(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for model in report["summary"]:
        print(f"\n{model}\n{markdown_table(report, model)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
