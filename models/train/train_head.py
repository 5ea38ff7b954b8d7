r"""`guardstream train`: train an embedder guard and write a model directory the worker loads.

    guardstream train --data-dir ../shared/data --out models/artifacts/embedder-minilm
    guardstream train --data mine.jsonl other.csv --policies unsafe_content --out my-guard
    guardstream train --sources sources.yaml --out my-guard --finetune --head svm

Steps: read the labeled prompts (the shared datasets with the project's labeling rules and
hand-written files, or your own files, see `models/train/files.py`); optionally fine-tune the
encoder with a triplet loss (`--finetune`, `models/train/finetune.py`); embed every window of every
prompt; train the head (an MLP, a linear SVM or logistic regression, one output per policy) on
the train split; set one threshold per policy so that the mean per-source false-positive rate
on the held-out sources (split `heldout`, sources never trained on) is at most `--fpr-budget`
(5%; `models/train/protocol.py`), or, without held-out rows, on the validation split (max F1 or
`--target-fpr`); report metrics on the test split, on the held-out sources and on the
hand-written benign prompts. Writes into `--out`: `config.json`, `head.safetensors`,
`metrics.json`, the encoder directory `encoder/` when it is not the packaged one, and a
generated `MODEL_CARD.md` when there is none.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.base import bert_onnx
from models.base.contract import Policy
from models.base.mlp_head import MlpHead
from models.embedder.config import EncoderRef, GuardConfig
from models.tool_main import tool_main
from models.train import evaluate
from models.train.data import HANDWRITTEN_GROUPS, SPLITS, Example
from models.train.embed import WindowEmbeddings, embed_texts
from models.train.files import DataFileError, add_data_arguments, load_examples
from models.train.mlp import Dataset, MlpSettings, train_mlp
from models.train.protocol import DEFAULT_FPR_BUDGET

log = logging.getLogger("guardstream.train")

ENCODER_SUBDIR = "encoder"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags of `guardstream train`."""
    parser.add_argument(
        "--model",
        choices=["embedder", "guardformer"],
        default="embedder",
        help="embedder guard (this help), or GuardFormer (`--model guardformer --help`) [embedder]",
    )
    data = add_data_arguments(parser)
    data.add_argument(
        "--handwritten-weight",
        type=float,
        default=16.0,
        help="loss weight of the hand-written prompts (models/train/*.jsonl) in the head [16]",
    )
    data.add_argument(
        "--handwritten-repeat",
        type=int,
        default=4,
        help="times each hand-written prompt is repeated in encoder fine-tuning [4]",
    )
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    encoder = parser.add_argument_group("encoder")
    encoder.add_argument(
        "--encoder-dir", type=Path, help="an already fine-tuned encoder directory [the packaged MiniLM]"
    )
    encoder.add_argument("--finetune", action="store_true", help="fine-tune the encoder first (torch)")
    encoder.add_argument(
        "--finetune-loss",
        choices=["triplet", "batch_hard", "contrastive"],
        default="triplet",
        help="[triplet]",
    )
    encoder.add_argument("--finetune-epochs", type=int, default=1, help="[1]")
    encoder.add_argument("--finetune-max-steps", type=int, default=None, help="stop after this many steps")
    encoder.add_argument("--finetune-batch-size", type=int, default=32, help="[32]")
    encoder.add_argument("--finetune-max-length", type=int, default=128, help="tokens per prompt [128]")
    head = parser.add_argument_group("head and calibration")
    head.add_argument("--head", choices=["mlp", "svm", "logreg"], default="mlp", help="[mlp]")
    head.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP [128]")
    head.add_argument("--epochs", type=int, default=80, help="MLP epochs, early-stopped [80]")
    head.add_argument("--c", type=float, default=1.0, help="inverse regularization of svm/logreg [1.0]")
    head.add_argument(
        "--fpr-budget",
        type=_budget,
        default=DEFAULT_FPR_BUDGET,
        help="thresholds: mean per-source false-positive rate on the held-out sources (split "
        "`heldout`) at most this, per policy; `none`: calibrate on the validation split [%(default)s]",
    )
    head.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="without held-out rows (or --fpr-budget none): the validation FPR to calibrate for, not max F1",
    )
    windows = parser.add_argument_group("windows and run")
    windows.add_argument(
        "--max-length", type=int, default=256, help="window in tokens with [CLS]/[SEP] [256]"
    )
    windows.add_argument("--window-stride", type=int, default=192, help="tokens between window starts [192]")
    windows.add_argument("--seed", type=int, default=0, help="[0]")
    windows.add_argument("--embed-batch-size", type=int, default=64, help="[64]")
    windows.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads, 0 = one per core [0]")
    windows.add_argument("--cache-dir", type=Path, default=None, help="ONNX and embedding cache")
    meta = parser.add_argument_group("model metadata")
    meta.add_argument("--name", default="embedder-minilm", help="[%(default)s]")
    meta.add_argument("--version", default="1.0.0", help="[%(default)s]")
    meta.add_argument("--policy-version", default="1", help="version of every policy [1]")


def _budget(value: str) -> float | None:
    if value.lower() == "none":
        return None
    budget = float(value)
    if not 0.0 < budget < 1.0:
        raise argparse.ArgumentTypeError(f"the budget must be in (0, 1) or none, got {value}")
    return budget


def check_splits(examples: Sequence[Example], policies: Sequence[str]) -> None:
    """Training needs train rows and validation rows of both classes for every policy."""
    y = evaluate.targets_of(examples, len(policies))
    for split in ("train", "validation"):
        rows = evaluate.split_rows(examples, split)
        for p, policy in enumerate(policies):
            known = y[rows, p][y[rows, p] >= 0]
            if not 0 < known.sum() < len(known):
                raise DataFileError(
                    f"the {split} split has {int(known.sum())} positive and {int(len(known) - known.sum())} "
                    f"negative prompts for {policy}: both are needed (add data or a split column)"
                )


def window_dataset(
    examples: Sequence[Example],
    embeddings: WindowEmbeddings,
    split: str,
    n_policies: int,
    handwritten_weight: float,
) -> Dataset:
    """The windows of one split; a prompt's windows share its targets and weight 1/windows."""
    in_split = np.array([e.split == split for e in examples])
    rows = in_split[embeddings.doc]
    doc = embeddings.doc[rows]
    windows_per_doc = np.bincount(embeddings.doc, minlength=len(examples))
    prompt_weight = np.array([handwritten_weight if e.group in HANDWRITTEN_GROUPS else 1.0 for e in examples])
    weight = (prompt_weight[doc] / windows_per_doc[doc]).astype(np.float32)
    return Dataset(embeddings.vectors[rows], evaluate.targets_of(examples, n_policies)[doc], weight)


def data_summary(examples: Sequence[Example], policies: Sequence[str]) -> dict[str, Any]:
    """Prompt counts per split and policy (positive / negative / unknown) and per split and group."""
    summary: dict[str, Any] = {}
    for split in SPLITS:
        chosen = [e for e in examples if e.split == split]
        if chosen:
            names = {1: "positive", 0: "negative", -1: "unknown"}
            summary[split] = {
                "prompts": len(chosen),
                "targets": {
                    policy: dict(Counter(names[e.targets[p]] for e in chosen))
                    for p, policy in enumerate(policies)
                },
                "groups": dict(Counter(e.group for e in chosen)),
            }
    return summary


def finetune(
    args: argparse.Namespace, examples: Sequence[Example], policies: Sequence[str], out: Path
) -> None:
    """Fine-tune the packaged encoder on the train split (validation loss on the validation split)."""
    from models.train.finetune import FinetuneSettings, finetune_encoder, training_pairs

    settings = FinetuneSettings(
        loss=args.finetune_loss,
        epochs=args.finetune_epochs,
        batch_size=args.finetune_batch_size,
        max_length=args.finetune_max_length,
        max_steps=args.finetune_max_steps,
        seed=args.seed,
    )
    texts, classes = training_pairs(examples, policies, "train", args.handwritten_repeat)
    validation = training_pairs(examples, policies, "validation")
    finetune_encoder(texts, classes, bert_onnx.encoder_dir(), out, settings, validation=validation)
    # The final encoder is saved; the checkpoints (for resuming) would only bloat the model directory.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def prepare_encoder(
    args: argparse.Namespace, examples: Sequence[Example], policies: Sequence[str]
) -> Path | None:
    """The encoder directory to embed with (inside `--out`), or None for the packaged encoder."""
    target = Path(args.out) / ENCODER_SUBDIR
    if args.finetune:
        finetune(args, examples, policies, target)
        return target
    if args.encoder_dir is not None:
        if Path(args.encoder_dir).resolve() != target.resolve():
            shutil.copytree(
                args.encoder_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints")
            )
        return target
    return None


def train_head(
    args: argparse.Namespace, train: Dataset, validation: Dataset
) -> tuple[MlpHead, dict[str, Any]]:
    """The chosen head and the settings it was trained with."""
    if args.head == "mlp":
        settings = MlpSettings(hidden=args.hidden, epochs=args.epochs, seed=args.seed)
        head, history = train_mlp(train, validation, settings)
        return head, {"head": "mlp", **vars(settings), "epochs_run": len(history)}
    from models.train.linear_heads import train_linear_head

    head = train_linear_head(args.head, train, validation, c=args.c, seed=args.seed)
    return head, {"head": args.head, "c": args.c}


def encoder_ref(encoder: Path | None) -> EncoderRef:
    if encoder is None:
        return EncoderRef(bert_onnx.ENCODER_PACKAGE, bert_onnx.ENCODER_SHA256)
    return EncoderRef.local(ENCODER_SUBDIR, bert_onnx.file_sha256(encoder / bert_onnx.WEIGHTS_FILE))


def write_model(
    args: argparse.Namespace,
    head: MlpHead,
    thresholds: Sequence[float],
    policies: Sequence[str],
    encoder: Path | None,
) -> GuardConfig:
    args.out.mkdir(parents=True, exist_ok=True)
    head.save(args.out / "head.safetensors")
    config = GuardConfig(
        name=args.name,
        version=args.version,
        policies=tuple(
            Policy(policy, args.policy_version, round(threshold, 6))
            for policy, threshold in zip(policies, thresholds, strict=True)
        ),
        max_length=args.max_length,
        window_stride=args.window_stride,
        encoder=encoder_ref(encoder),
        head_file="head.safetensors",
    )
    config.save(args.out / "config.json")
    return config


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate and write the model directory; returns the metrics written to metrics.json."""
    started = time.perf_counter()
    policies, examples = load_examples(args)
    check_splits(examples, policies)
    log.info("%d prompts after deduplication, policies %s", len(examples), ", ".join(policies))
    args.out.mkdir(parents=True, exist_ok=True)
    encoder = prepare_encoder(args, examples, policies)
    embeddings = embed_texts(
        [e.text for e in examples],
        args.max_length,
        args.window_stride,
        args.cache_dir,
        args.embed_batch_size,
        args.threads,
        encoder,
    )
    n = len(policies)
    head, head_settings = train_head(
        args,
        window_dataset(examples, embeddings, "train", n, args.handwritten_weight),
        window_dataset(examples, embeddings, "validation", n, args.handwritten_weight),
    )
    scores = evaluate.prompt_scores(head, embeddings, len(examples))
    thresholds, report = evaluate.calibrate_and_report(
        examples, scores, policies, args.fpr_budget, args.target_fpr
    )
    config = write_model(args, head, thresholds, policies, encoder)
    metrics = {
        "model": {"name": config.name, "version": config.version},
        "command": "guardstream train "
        + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:]),
        "encoder": "packaged all-MiniLM-L6-v2" if encoder is None else f"{ENCODER_SUBDIR}/ (fine-tuned)",
        "settings": {
            **head_settings,
            "max_length": args.max_length,
            "window_stride": args.window_stride,
            "handwritten_weight": args.handwritten_weight,
            "fpr_budget": args.fpr_budget,
        },
        "data": data_summary(examples, policies),
        **report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    card = args.out / "MODEL_CARD.md"
    if not card.exists():
        from models.train.model_card import render_model_card

        card.write_text(render_model_card(config, metrics), encoding="utf-8")
    return metrics


def print_summary(metrics: dict[str, Any], out: Path) -> None:
    """Test-split and held-out figures per policy, one line each, and where the files are."""
    print(f"thresholds: {json.dumps(metrics['thresholds'])}")
    for policy, figures in metrics["test"].items():
        print(
            f"test {policy:<20} precision {figures['precision']:.3f}  recall {figures['recall']:.3f}  "
            f"F1 {figures['f1']:.3f}  FPR {figures['fpr']:.3f}  AUPRC {figures['auprc']:.3f}"
        )
    heldout = metrics.get("heldout_sources")
    if heldout is not None:
        for policy in metrics["thresholds"]:
            figures = heldout[policy]
            print(
                f"held-out sources {policy:<20} macro recall {figures['macro_recall']:.3f}  "
                f"macro FPR {figures['macro_fpr']:.3f}"
            )
        print(f"selection score (mean held-out recall at the thresholds): {heldout['selection_score']:.4f}")
    print(f"wrote {out}/config.json, head.safetensors, metrics.json")


def run(args: argparse.Namespace) -> int:
    """Entry point of `guardstream train`: exit status 0, or 2 with a message for bad data."""
    try:
        metrics = run_training(args)
    except (DataFileError, FileNotFoundError) as exc:
        print(f"guardstream train: {exc}", file=sys.stderr)
        return 2
    print_summary(metrics, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    kind = _model_kind(arguments)
    if kind == "guardformer":
        from models.train import train_guardformer

        return train_guardformer.main(_without_model_flag(arguments))
    return tool_main("train", __doc__, configure_parser, run, arguments)


def _model_kind(arguments: list[str]) -> str:
    for index, argument in enumerate(arguments):
        if argument.startswith("--model="):
            return argument.split("=", 1)[1]
        if argument == "--model" and index + 1 < len(arguments):
            return arguments[index + 1]
    return "embedder"


def _without_model_flag(arguments: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--model":
            skip = True
        elif not argument.startswith("--model="):
            out.append(argument)
    return out


if __name__ == "__main__":
    sys.exit(main())
