r"""GuardFormer against the embedder guard on the same pairs, and its cost as policies are added.

    python -m models.bench.guardformer GUARDFORMER_DIR [MORE_DIRS ...] --data-dir ../shared/data \
        [--split test] [--out models/results/guardformer-test.json]

Quality: for each policy of the starter set (`models/policies/starter`), the (prompt, label)
pairs of the split (`models.train.guardformer_data`: up to --max-positives positives and twice as
many negatives, seeded), scored by each model directory given (through ONNX Runtime, as the
worker scores them) and, for the policies it knows, by the embedder guard. Per model and
policy: F1, precision, recall and false-positive rate at the policy's threshold, AUPRC, and the
best F1 over thresholds. A model directory whose `train.json` left a policy out of training is
marked zero-shot for it.

Cost: prompts/s of the first model when 1, 2, 4 and 8 policies are in force (each prompt is
one model row per policy), on --n prompts of the split, next to the embedder guard's prompts/s
in the same run. Needs the training extra (the data and metrics code).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base.contract import GuardModel
from models.base.directory import DEFAULT_MODEL_DIR
from models.base.packing import score_texts as packed_scores
from models.guardformer.guard import GuardFormerGuard
from models.policies import DEFAULT_POLICY_DIR, PolicySet, load_policies
from models.serving.loader import load_model
from models.train import metrics
from models.train.guardformer_data import (
    GIP_POLICY_FILE,
    HANDWRITTEN_POLICY_FILES,
    Pair,
    load_prompts,
    make_pairs,
)

POLICY_COUNTS = (1, 2, 4, 8)


def score_texts(model: GuardModel, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """[len(texts), n_policies] scores, in batches as the worker would send them."""
    return packed_scores(model, texts, max_items=batch_size)


def policy_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    at = metrics.binary_metrics(y, scores, threshold)
    best = metrics.max_f1_threshold(y, scores)
    return {**at, "f1_at_best_threshold": metrics.binary_metrics(y, scores, best)["f1"]}


def untrained_starter_policies(model_dir: Path) -> set[str]:
    record = model_dir / "train.json"
    if not record.is_file():
        return set()
    trained = set(json.loads(record.read_text(encoding="utf-8")).get("trained_policies", []))
    return {p.id for p in load_policies(DEFAULT_POLICY_DIR)} - trained


def quality(
    model_dirs: list[Path],
    embedder: GuardModel,
    pairs_by_policy: dict[str, list[Pair]],
    starter: PolicySet,
    cache: Path | None,
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for policy in starter:
        pairs = pairs_by_policy[policy.id]
        y = np.asarray([p.violation for p in pairs], dtype=np.int64)
        texts = [p.text for p in pairs]
        entry: dict[str, Any] = {"pairs": len(pairs), "positives": int(y.sum())}
        if len(set(y.tolist())) < 2:
            report[policy.id] = {**entry, "skipped": "the split has no positives or no negatives"}
            print(f"{policy.id}: skipped ({len(pairs)} pairs, {int(y.sum())} positives)", flush=True)
            continue
        for model_dir in model_dirs:
            guard = GuardFormerGuard.load(model_dir, PolicySet((policy,)), device="cpu", cache_dir=cache)
            scores = score_texts(guard, texts)[:, 0]
            result = policy_metrics(y, scores, policy.threshold)
            result["zero_shot"] = policy.id in untrained_starter_policies(model_dir)
            entry[model_dir.name] = result
        if policy.id in embedder.info.policy_ids:
            column = embedder.info.policy_ids.index(policy.id)
            entry["embedder"] = policy_metrics(y, score_texts(embedder, texts)[:, column], policy.threshold)
        report[policy.id] = entry
        print(
            f"{policy.id}: "
            + ", ".join(f"{k} F1 {v['f1']:.3f}" for k, v in entry.items() if isinstance(v, dict)),
            flush=True,
        )
    return report


def throughput(model_dir: Path, embedder: GuardModel, texts: list[str], cache: Path | None) -> dict[str, Any]:
    policies = list(load_policies(DEFAULT_POLICY_DIR)) + list(load_policies(GIP_POLICY_FILE))
    out: dict[str, Any] = {"prompts": len(texts)}
    score_texts(embedder, texts[:32])
    started = time.perf_counter()
    score_texts(embedder, texts)
    out["embedder_prompts_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)
    for count in POLICY_COUNTS:
        guard = GuardFormerGuard.load(
            model_dir, PolicySet(tuple(policies[:count])), device="cpu", cache_dir=cache
        )
        score_texts(guard, texts[:32])
        started = time.perf_counter()
        score_texts(guard, texts)
        rate = len(texts) / (time.perf_counter() - started)
        out[f"guardformer_{count}_policies_prompts_per_s"] = round(rate, 1)
        print(f"{count} policies: {rate:.1f} prompts/s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, nargs="+", help="GuardFormer / PolicyGuard model directories")
    parser.add_argument("--data-dir", type=Path, required=True, help="the shared datasets")
    parser.add_argument("--embedder", type=Path, help="embedder guard directory [the packaged one]")
    parser.add_argument(
        "--handwritten", type=Path, action="append", help="per-policy rows files [the packaged ones]"
    )
    parser.add_argument("--split", default="test", choices=["validation", "test", "heldout"])
    parser.add_argument("--max-positives", type=int, default=300, help="per policy [300]")
    parser.add_argument("--n", type=int, default=256, help="prompts for the throughput runs [256]")
    parser.add_argument("--only", nargs="+", help="measure only these starter policies")
    parser.add_argument("--no-throughput", action="store_true", help="skip the policy-count runs")
    parser.add_argument("--cache-dir", type=Path, help="ONNX build cache")
    parser.add_argument("--out", type=Path, help="JSON report [models/results/guardformer-<split>.json]")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"error: no data directory {args.data_dir} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    embedder = load_model(args.embedder or DEFAULT_MODEL_DIR, device="cpu", cache_dir=args.cache_dir)
    starter = load_policies(DEFAULT_POLICY_DIR)
    if args.only:
        unknown = set(args.only) - set(starter.ids)
        if unknown:
            print(f"error: not starter policies: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        starter = PolicySet(tuple(p for p in starter if p.id in args.only))
    prompts = load_prompts(args.data_dir, args.handwritten or HANDWRITTEN_POLICY_FILES)
    pairs = {p.id: make_pairs(prompts, [p.id], args.split, args.max_positives, 2.0, seed=1) for p in starter}
    report = {
        "command": "python -m models.bench.guardformer " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "split": args.split,
        "quality": quality(args.models, embedder, pairs, starter, args.cache_dir),
        "throughput": None
        if args.no_throughput
        else throughput(
            args.models[0], embedder, [p.text for ps in pairs.values() for p in ps][: args.n], args.cache_dir
        ),
    }
    out = args.out or Path(f"models/results/guardformer-{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
