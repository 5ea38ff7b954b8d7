r"""Trains the MLP head of the embedder guard and writes a model directory.

    python -m models.train.train_head --data-dir ../shared/data \
        --out models/artifacts/embedder-minilm --seed 0

Reads the shared JSONL datasets (see models/train/data.py for how rows become per-policy targets
and splits) plus the hand-written edgy benign prompts, embeds every window with the ONNX encoder,
trains the head on the train split, calibrates one threshold per policy on the validation split
and reports metrics on the test split, on the held-out sources and on the held-out edgy prompts.
Writes `head.safetensors`, `config.json` and `metrics.json` into `--out` (the model card is kept
by hand).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from models.embedder.config import EncoderRef, GuardConfig
from models.runtime import bert_onnx
from models.runtime.base import Policy
from models.runtime.mlp_head import MlpHead
from models.train import evaluate
from models.train.data import POLICIES, Example, shared_examples
from models.train.embed import WindowEmbeddings, embed_texts
from models.train.mlp import Dataset, MlpSettings, train_mlp

log = logging.getLogger("train_head")

HERE = Path(__file__).resolve().parent
EDGY_FILE = HERE / "benign_edgy.jsonl"
OBFUSCATED_FILE = HERE / "obfuscated.jsonl"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="directory of the shared JSONL datasets")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--edgy-file", type=Path, default=EDGY_FILE, help="hand-written edgy benign prompts")
    parser.add_argument(
        "--obfuscated-file", type=Path, default=OBFUSCATED_FILE, help="disguised prompts (make_obfuscated.py)"
    )
    parser.add_argument("--edgy-weight", type=float, default=8.0, help="loss weight of edgy benign prompts")
    parser.add_argument(
        "--max-length", type=int, default=256, help="window size in tokens, [CLS]/[SEP] included"
    )
    parser.add_argument("--window-stride", type=int, default=192, help="tokens between window starts")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units of the head")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument(
        "--target-fpr", type=float, default=None, help="calibrate for this FPR instead of max F1"
    )
    parser.add_argument(
        "--encoder-dir", type=Path, default=None, help="fine-tuned encoder directory [packaged MiniLM]"
    )
    parser.add_argument("--embed-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: one per core)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="ONNX and embedding cache")
    parser.add_argument("--name", default="embedder-minilm")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--policy-version", default="1")
    return parser.parse_args(argv)


def split_rows(examples: list[Example], split: str) -> np.ndarray:
    return np.array([i for i, e in enumerate(examples) if e.split == split], dtype=np.int64)


def window_dataset(
    examples: list[Example], embeddings: WindowEmbeddings, split: str, edgy_weight: float
) -> Dataset:
    """The windows of one split; a prompt's windows share its targets and weight 1/windows."""
    in_split = np.array([e.split == split for e in examples])
    rows = in_split[embeddings.doc]
    doc = embeddings.doc[rows]
    windows_per_doc = np.bincount(embeddings.doc, minlength=len(examples))
    prompt_weight = np.array([edgy_weight if e.group == "benign_edgy" else 1.0 for e in examples])
    weight = (prompt_weight[doc] / windows_per_doc[doc]).astype(np.float32)
    return Dataset(embeddings.vectors[rows], evaluate.targets_of(examples, len(POLICIES))[doc], weight)


def data_summary(examples: list[Example]) -> dict[str, Any]:
    """Prompt counts per split and policy (positive / negative / unknown) and per split and group."""
    summary: dict[str, Any] = {}
    for split in ("train", "validation", "test", "heldout"):
        chosen = [e for e in examples if e.split == split]
        counts = {
            policy: dict(Counter({1: "positive", 0: "negative", -1: "unknown"}[e.targets[p]] for e in chosen))
            for p, policy in enumerate(POLICIES)
        }
        summary[split] = {
            "prompts": len(chosen),
            "targets": counts,
            "groups": dict(Counter(e.group for e in chosen)),
        }
    return summary


def evaluate_all(
    examples: list[Example], scores: np.ndarray, target_fpr: float | None
) -> tuple[list[float], dict[str, Any]]:
    """Thresholds from validation, then the report on validation, test, held-out sources, edgy."""
    y = evaluate.targets_of(examples, len(POLICIES))
    val, test, heldout = (split_rows(examples, s) for s in ("validation", "test", "heldout"))
    thresholds = evaluate.calibrate(y[val], scores[val], target_fpr, POLICIES)
    edgy_test = np.array([i for i in test if examples[i].group == "benign_edgy"], dtype=np.int64)
    report = {
        "thresholds": dict(zip(POLICIES, thresholds, strict=True)),
        "calibration": f"fpr<={target_fpr}" if target_fpr is not None else "max F1 on validation",
        "validation": evaluate.per_policy(y[val], scores[val], thresholds, POLICIES),
        "test": evaluate.per_policy(y[test], scores[test], thresholds, POLICIES),
        "test_recall_by_source": evaluate.recall_by_group(
            [examples[i] for i in test], scores[test], thresholds, POLICIES
        ),
        "heldout": evaluate.per_policy(y[heldout], scores[heldout], thresholds, POLICIES),
        "heldout_source_recall": evaluate.recall_by_group(
            [examples[i] for i in heldout], scores[heldout], thresholds, POLICIES
        ),
        "benign_edgy_test_fpr": evaluate.false_positive_rate(scores[edgy_test], thresholds, POLICIES),
    }
    return thresholds, report


def write_model(args: argparse.Namespace, head: MlpHead, thresholds: list[float]) -> GuardConfig:
    args.out.mkdir(parents=True, exist_ok=True)
    head.save(args.out / "head.safetensors")
    config = GuardConfig(
        name=args.name,
        version=args.version,
        policies=tuple(
            Policy(policy, args.policy_version, round(threshold, 6))
            for policy, threshold in zip(POLICIES, thresholds, strict=True)
        ),
        max_length=args.max_length,
        window_stride=args.window_stride,
        encoder=EncoderRef(bert_onnx.ENCODER_PACKAGE, bert_onnx.ENCODER_SHA256),
        head_file="head.safetensors",
    )
    config.save(args.out / "config.json")
    return config


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    examples = shared_examples(args.data_dir, args.edgy_file, args.obfuscated_file)
    log.info("%d prompts after deduplication", len(examples))
    embeddings = embed_texts(
        [e.text for e in examples],
        args.max_length,
        args.window_stride,
        args.cache_dir,
        args.embed_batch_size,
        args.threads,
        args.encoder_dir,
    )
    settings = MlpSettings(hidden=args.hidden, epochs=args.epochs, seed=args.seed)
    head, history = train_mlp(
        window_dataset(examples, embeddings, "train", args.edgy_weight),
        window_dataset(examples, embeddings, "validation", args.edgy_weight),
        settings,
    )
    scores = evaluate.prompt_scores(head, embeddings, len(examples))
    thresholds, report = evaluate_all(examples, scores, args.target_fpr)
    config = write_model(args, head, thresholds)
    metrics = {
        "model": {"name": config.name, "version": config.version},
        "command": "python -m models.train.train_head " + shlex.join(sys.argv[1:]),
        "settings": {
            **vars(settings),
            "max_length": args.max_length,
            "window_stride": args.window_stride,
            "edgy_weight": args.edgy_weight,
        },
        "data": data_summary(examples),
        "epochs_run": len(history),
        **report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.data_dir.is_dir():
        sys.exit(
            f"data directory {args.data_dir} not found: pass --data-dir (the shared datasets, see README)"
        )
    metrics = run(args)
    summary = {split: metrics[split] for split in ("test", "heldout_source_recall", "benign_edgy_test_fpr")}
    print(json.dumps({"thresholds": metrics["thresholds"], **summary}, indent=2))
    print(f"wrote {args.out}/head.safetensors, config.json, metrics.json")


if __name__ == "__main__":
    main()
