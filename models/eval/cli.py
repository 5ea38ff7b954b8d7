r"""`guardstream eval`: measure one or more model directories on labeled prompts.

    guardstream eval models/artifacts/embedder-minilm --data-dir ../shared/data --split test
    guardstream eval my-guard other-guard --data labeled.csv --json eval.json --plot pr.png
    guardstream eval my-guard --verdict --data ../shared/data/benchmarks/*.jsonl --json bench.json

Each model scores the prompts exactly as the worker does (its normalization, windows, ONNX
Runtime session and thresholds). Per policy the data labels: accuracy, precision, recall, F1,
false-positive rate, AUPRC and recall at 1% false-positive rate; per model: texts/s in batches
and per-input latency (p50/p99, one prompt at a time). Prints a table; `--json` writes every
figure, `--plot` a precision-recall curve per model and policy.

`--verdict` judges the model as a user does, on files with a single `label` column (1 = should be
blocked): verdict = block when any policy is flagged, each file reported on its own, with each
policy's recall and false-positive rate beside the verdict's (see `models.eval.verdict`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.base.contract import FloatArray, GuardModel
from models.base.packing import score_items
from models.eval.verdict import LabeledFile, format_verdict_table, load_labeled_file, verdict_report
from models.policies import DEFAULT_POLICY_DIR, PolicyError, PolicySet, load_policies
from models.serving.loader import load_model
from models.tool_main import tool_main
from models.train.data import SPLITS, Example
from models.train.files import DataFileError, add_data_arguments, load_examples
from models.train.metrics import binary_metrics, recall_at_fpr

log = logging.getLogger("guardstream.eval")

#: The false-positive rate at which `recall_at_1pct_fpr` is read.
LOW_FPR = 0.01


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags of `guardstream eval`."""
    parser.add_argument("models", type=Path, nargs="+", help="model directories to evaluate")
    add_data_arguments(parser)
    parser.add_argument(
        "--split",
        choices=[*SPLITS, "all"],
        default=None,
        help="which split to score [test with --data-dir, all rows of your files otherwise]",
    )
    parser.add_argument("--limit", type=int, default=None, help="score only the first N prompts")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per model call [32]")
    parser.add_argument("--latency-samples", type=int, default=100, help="prompts timed one by one [100]")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="[auto]")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads, 0 = one per core [0]")
    parser.add_argument(
        "--policy-files",
        type=Path,
        nargs="+",
        help="policy files / directories a GuardFormer model is asked about [the starter set]",
    )
    parser.add_argument(
        "--verdict",
        action="store_true",
        help="score --data files with one `label` column: verdict = block when any policy is flagged",
    )
    parser.add_argument(
        "--by-category",
        type=int,
        default=0,
        metavar="DEPTH",
        help="with --verdict: share blocked per category (its first DEPTH `|` fields) [off]",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="write precision-recall curves to this PNG")


def select(examples: Sequence[Example], split: str, limit: int | None) -> list[Example]:
    chosen = [e for e in examples if split == "all" or e.split == split]
    return chosen[:limit] if limit is not None else chosen


def score_all(model: GuardModel, texts: Sequence[str], batch_size: int) -> tuple[FloatArray, float]:
    """(scores in text order, seconds): length-sorted chunks of `batch_size` prompts, each scored in
    the model calls the worker's packer makes of them."""
    encoded = model.encode([model.normalize(t) for t in texts])
    order = np.argsort([item.n_tokens for item in encoded], kind="stable")
    scores = np.zeros((len(texts), len(model.info.policies)), dtype=np.float32)
    started = time.perf_counter()
    with tqdm(total=len(texts), desc="scoring", unit="prompt") as progress:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            scores[rows] = score_items(model, [encoded[i] for i in rows])
            progress.update(len(rows))
    return scores, time.perf_counter() - started


def latency_ms(model: GuardModel, texts: Sequence[str]) -> dict[str, float]:
    """p50/p99 of normalize + tokenize + score for one prompt at a time."""
    timings = []
    for text in texts:
        started = time.perf_counter()
        model.score(model.encode([model.normalize(text)]))
        timings.append((time.perf_counter() - started) * 1000)
    if not timings:
        return {}
    return {
        "p50": float(np.percentile(timings, 50)),
        "p99": float(np.percentile(timings, 99)),
        "n": len(timings),
    }


def policy_metrics(
    model: GuardModel, examples: Sequence[Example], data_policies: Sequence[str], scores: FloatArray
) -> dict[str, Any]:
    """Metrics of every policy both the model scores and the data labels."""
    y = np.array([e.targets for e in examples], dtype=np.int64).reshape(-1, len(data_policies))
    out: dict[str, Any] = {}
    for index, policy in enumerate(model.info.policies):
        if policy.id not in data_policies:
            continue
        column = y[:, data_policies.index(policy.id)]
        if not (column >= 0).any():
            continue
        figures = binary_metrics(column, scores[:, index], policy.threshold)
        figures["recall_at_1pct_fpr"] = recall_at_fpr(column, scores[:, index], LOW_FPR)
        figures["threshold"] = policy.threshold
        out[policy.id] = figures
    return out


def asked_policies(args: argparse.Namespace, data_policies: Sequence[str] | None = None) -> PolicySet | None:
    """What a GuardFormer model scores: the policies of --policy-files (those the data labels, when
    it names them); None when that leaves none."""
    files = args.policy_files or [DEFAULT_POLICY_DIR]
    registry = PolicySet(tuple(p for path in files for p in load_policies(path)))
    asked = PolicySet(tuple(p for p in registry if data_policies is None or p.id in data_policies))
    return asked or None


def evaluate_model(
    path: Path, examples: Sequence[Example], policies: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    model = load_model(
        path, device=args.device, intra_op_threads=args.threads, policies=asked_policies(args, policies)
    )
    shared = [p for p in model.info.policy_ids if p in policies]
    if not shared:
        raise DataFileError(
            f"{path} scores {', '.join(model.info.policy_ids)}; the data labels {', '.join(policies)}"
        )
    texts = [e.text for e in examples]
    scores, seconds = score_all(model, texts, args.batch_size)
    return {
        "model": {
            "path": str(path),
            "name": model.info.name,
            "version": model.info.version,
            "device": model.device,
        },
        "prompts": len(texts),
        "texts_per_s": len(texts) / seconds if seconds else float("nan"),
        "batch_size": args.batch_size,
        "latency_ms": latency_ms(model, texts[: args.latency_samples]),
        "policies": policy_metrics(model, examples, policies, scores),
        "_scores": scores,
        "_policy_ids": model.info.policy_ids,
    }


def format_table(results: Sequence[dict[str, Any]]) -> str:
    columns = ("accuracy", "precision", "recall", "f1", "fpr", "auprc", "recall_at_1pct_fpr")
    header = f"{'model':<28} {'policy':<18} " + " ".join(f"{c[:10]:>10}" for c in columns)
    lines = [header, "-" * len(header)]
    for result in results:
        name = f"{result['model']['name']} {result['model']['version']}"
        for policy, figures in result["policies"].items():
            lines.append(f"{name[:28]:<28} {policy:<18} " + " ".join(f"{figures[c]:>10.3f}" for c in columns))
        latency = result["latency_ms"]
        p50, p99 = latency.get("p50", float("nan")), latency.get("p99", float("nan"))
        lines.append(
            f"{'':<28} {result['prompts']} prompts, {result['texts_per_s']:.1f} texts/s at batch "
            f"{result['batch_size']}, latency p50 {p50:.1f} ms p99 {p99:.1f} ms "
            f"on {result['model']['device']}"
        )
    return "\n".join(lines)


def plot_curves(
    results: Sequence[dict[str, Any]], examples: Sequence[Example], policies: Sequence[str], path: Path
) -> None:
    """One precision-recall curve per model and policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    y = np.array([e.targets for e in examples], dtype=np.int64).reshape(-1, len(policies))
    figure, axes = plt.subplots(figsize=(7, 5))
    for result in results:
        for index, policy in enumerate(result["_policy_ids"]):
            if policy not in result["policies"]:
                continue
            column = y[:, policies.index(policy)]
            known = column >= 0
            precision, recall, _ = precision_recall_curve(column[known] == 1, result["_scores"][known, index])
            auprc = result["policies"][policy]["auprc"]
            axes.plot(recall, precision, label=f"{result['model']['name']} {policy} (AUPRC {auprc:.3f})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def evaluate_verdicts(path: Path, files: Sequence[LabeledFile], args: argparse.Namespace) -> dict[str, Any]:
    """The verdict report of one model on each file."""
    model = load_model(path, device=args.device, intra_op_threads=args.threads, policies=asked_policies(args))
    reports, texts, seconds = [], 0, 0.0
    for data in files:
        log.info("%s: %d prompts", data.name, len(data.texts))
        scores, elapsed = score_all(model, data.texts, args.batch_size)
        reports.append(verdict_report(model, data, scores, args.by_category))
        texts, seconds = texts + len(data.texts), seconds + elapsed
    return {
        "model": {
            "path": str(path),
            "name": model.info.name,
            "version": model.info.version,
            "device": model.device,
        },
        "thresholds": {p.id: p.threshold for p in model.info.policies},
        "texts_per_s": texts / seconds if seconds else float("nan"),
        "files": reports,
    }


def run_verdicts(args: argparse.Namespace) -> list[dict[str, Any]]:
    if not args.data or args.data_dir is not None or args.sources is not None:
        raise DataFileError("--verdict scores --data files (one `label` column each)")
    files = [load_labeled_file(path) for path in args.data]
    if args.limit is not None:
        files = [
            LabeledFile(f.path, f.texts[: args.limit], f.labels[: args.limit], f.categories) for f in files
        ]
    return [evaluate_verdicts(path, files, args) for path in args.models]


def run_eval(args: argparse.Namespace) -> list[dict[str, Any]]:
    policies, examples = load_examples(args)
    split = args.split or ("test" if args.data_dir is not None else "all")
    chosen = select(examples, split, args.limit)
    if not chosen:
        raise DataFileError(f"no prompts in split {split!r}")
    log.info("%d prompts (split %s)", len(chosen), split)
    results = [evaluate_model(path, chosen, policies, args) for path in args.models]
    if args.plot is not None:
        plot_curves(results, chosen, policies, args.plot)
    return results


def run(args: argparse.Namespace) -> int:
    """Entry point of `guardstream eval`: 0, or 2 with a message for bad data or model directories."""
    try:
        results = run_verdicts(args) if args.verdict else run_eval(args)
    except (DataFileError, PolicyError, FileNotFoundError, ValueError) as exc:
        print(f"guardstream eval: {exc}", file=sys.stderr)
        return 2
    print(format_verdict_table(results) if args.verdict else format_table(results))
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot is not None:
        print(f"wrote {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return tool_main("eval", __doc__, configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
