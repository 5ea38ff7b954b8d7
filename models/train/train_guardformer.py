r"""Train GuardFormer (many policies at once) or PolicyGuard (one policy).

    guardstream train --model guardformer --data-dir ../shared/data --out my-guardformer
    guardstream train --model guardformer --data-dir ../shared/data --out my-policyguard \
        --only-policy financial_advice [--init-from my-guardformer --mode head]

GuardFormer: guardrail instruction pretraining on (policy, prompt) pairs of every policy of the
starter set and of `gip_policies.yaml`, with the combined loss of `guardformer_model` (λ weights
`--lambda-mlm`, `--lambda-alice`, `--lambda-ce`). Policies named by `--holdout-policies` are
left out of training entirely, so the model can be measured zero-shot on them.
PolicyGuard: the same classifier trained on one policy (`--only-policy`): from the base encoder,
or from a trained GuardFormer (`--init-from`), either fully (`--mode full`, FFT) or the
classification head only (`--mode head`, CFT).

Writes into `--out`: `encoder/` (BERT weights, config, tokenizer), `head.safetensors`,
`config.json` (kind "guardformer", input lengths, the policies trained on with their
fingerprints), `train.json` (settings, loss history, speed) and `metrics.json` (validation and
test F1 / AUPRC / FPR per policy, at each policy's threshold and at the best-F1 threshold).
`guardstream export` turns the directory into ONNX for the worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.base.bert_onnx import encoder_dir, file_sha256
from models.base.directory import CONFIG_FILE
from models.guardformer.calibration import calibration_entries
from models.guardformer.config import ENCODER_SUBDIR, HEAD_FILE, GuardFormerConfig
from models.guardformer.instruction import InstructionTokenizer
from models.policies import PolicyDefinition
from models.train.finetune import choose_device, linear_schedule
from models.train.guardformer_data import (
    HANDWRITTEN_POLICY_FILES,
    HELDOUT_SELECTION_POLICIES,
    HELDOUT_TEST_POLICIES,
    TRAINING_POLICY_FILES,
    WRITTEN_POLICY_FILE,
    Pair,
    all_policies,
    hold_out,
    load_prompts,
    load_rows,
    make_pairs,
    pair_counts,
    relations,
)
from models.train.guardformer_io import (
    PairEncoder,
    evaluate_pairs,
    head_of,
    load_model,
    score_pairs,
    write_calibration,
)
from models.train.guardformer_model import GuardFormerModel, LossWeights, guardformer_loss
from models.train.torch_encoder import WEIGHTS_FILE

log = logging.getLogger("guardstream.train_guardformer")


@dataclass(frozen=True)
class TrainSettings:
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 3e-5
    head_learning_rate: float = 1e-3
    warmup_ratio: float = 0.06
    max_length: int = 192
    max_policy_tokens: int = 96
    max_positives: int = 600
    negatives_per_positive: float = 2.0
    hard_negative_share: float = 0.5  # of a policy's negatives, the share drawn from its look-alikes
    mode: str = "full"  # "full" (FFT) or "head" (CFT)
    seed: int = 0
    max_steps: int | None = None
    auxiliary_every: int = 1  # MLM and ALICE++ terms on every n-th step (1: every step, as the paper)
    eval_max_positives: int = 300
    policy_variants: float = 0.0  # share of training rows that read the policy's name or description alone


def make_optimizer(model: GuardFormerModel, settings: TrainSettings) -> torch.optim.AdamW:
    head_params = list(model.head.parameters())
    if settings.mode == "head":
        for parameter in model.encoder.parameters():
            parameter.requires_grad_(False)
        return torch.optim.AdamW(head_params, lr=settings.head_learning_rate)
    head_ids = {id(p) for p in head_params}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    return torch.optim.AdamW(
        [
            {"params": body, "lr": settings.learning_rate, "weight_decay": 0.01},
            {"params": head_params, "lr": settings.head_learning_rate, "weight_decay": 0.0},
        ]
    )


class Trainer:
    """The loop: batches of pairs, the combined loss, progress, history."""

    def __init__(
        self, model: GuardFormerModel, encoder: PairEncoder, weights: LossWeights, settings: TrainSettings
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.weights = weights
        self.settings = settings
        self.device = next(model.parameters()).device
        tok = encoder.tokenizer
        special = torch.tensor([tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id], device=self.device)
        self.masking = (special, tok.mask_id, tok.vocab_size)
        self.history: list[dict[str, float]] = []

    def batches(self, pairs: Sequence[Pair], rng: np.random.Generator) -> list[list[int]]:
        """Random batches of similar lengths (less padding): shuffle, sort within chunks, split."""
        order = rng.permutation(len(pairs)).tolist()
        size = self.settings.batch_size
        chunk = size * 50
        lengths = [len(p.text) for p in pairs]
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
            batches += [part[i : i + size] for i in range(0, len(part), size)]
        rng.shuffle(batches)
        return batches

    def train(self, pairs: Sequence[Pair]) -> dict[str, Any]:
        settings = self.settings
        rng = np.random.default_rng(settings.seed)
        torch.manual_seed(settings.seed)
        ids = self.encoder.ids(pairs, settings.policy_variants, settings.seed)
        labels = torch.tensor([p.label for p in pairs], dtype=torch.float32)
        per_epoch = self.batches(pairs, rng)
        total = max(1, int(len(per_epoch) * settings.epochs))
        if settings.max_steps:
            total = min(total, settings.max_steps)
        optimizer = make_optimizer(self.model, settings)
        schedule = linear_schedule(optimizer, total, settings.warmup_ratio)
        self.model.train()
        if settings.mode == "head":
            self.model.encoder.eval()  # frozen body: no dropout either
        started = time.perf_counter()
        plan = per_epoch
        progress = tqdm(total=total, desc="guardformer", unit="step", dynamic_ncols=True)
        for step in range(total):
            if not plan:
                plan = self.batches(pairs, rng)
            rows = plan.pop()
            input_ids, mask = self.encoder.tensors([ids[i] for i in rows], self.device)
            parts = guardformer_loss(
                self.model,
                input_ids,
                mask,
                labels[rows].to(self.device),
                self.weights,
                self.masking,
                auxiliary=step % settings.auxiliary_every == 0,
            )
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            record = {"step": step + 1, "loss": float(parts.total.detach()), "ce": parts.ce, "mlm": parts.mlm}
            record |= {"alice_label": parts.alice_label, "alice_virtual": parts.alice_virtual}
            self.history.append(record)
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.3f}", ce=f"{parts.ce:.3f}")
        progress.close()
        seconds = time.perf_counter() - started
        return {
            "steps": total,
            "seconds": round(seconds, 1),
            "pairs_per_s": round(total * settings.batch_size / seconds, 2),
        }


def save_model(
    out: Path,
    model: GuardFormerModel,
    tokenizer_from: Path,
    settings: TrainSettings,
    trained: Sequence[PolicyDefinition],
    name: str,
    version: str,
) -> None:
    model.encoder.save(out / ENCODER_SUBDIR, tokenizer_from)
    head_of(model).save(out / HEAD_FILE)
    GuardFormerConfig(
        name=name,
        version=version,
        max_length=settings.max_length,
        max_policy_tokens=settings.max_policy_tokens,
        encoder_path=ENCODER_SUBDIR,
        encoder_sha256=file_sha256(out / ENCODER_SUBDIR / WEIGHTS_FILE),
        head_file=HEAD_FILE,
        trained_policies=tuple(
            {"id": p.id, "version": p.version, "fingerprint": p.fingerprint} for p in trained
        ),
    ).save(out / CONFIG_FILE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardstream train --model guardformer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, help="the shared datasets (see their README)")
    parser.add_argument(
        "--train-rows",
        type=Path,
        action="append",
        help="train only on these rows files (JSONL text/policy/label/split, e.g. `guardstream synth` "
        "output); validation and test still come from --data-dir, else from the rows themselves",
    )
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--policies", type=Path, action="append", help="policy files/dirs [starter + gip]")
    parser.add_argument(
        "--handwritten", type=Path, action="append", help="per-policy rows files [the packaged ones]"
    )
    parser.add_argument(
        "--holdout-policies",
        nargs="*",
        default=[*HELDOUT_SELECTION_POLICIES, *HELDOUT_TEST_POLICIES],
        help="policies kept out of training, measured zero-shot [the selection and test ones of "
        "models/train/guardformer_data.py]",
    )
    parser.add_argument("--only-policy", help="PolicyGuard: train on this one policy")
    parser.add_argument("--init-from", type=Path, help="start from a trained GuardFormer directory")
    parser.add_argument("--mode", choices=["full", "head"], default="full", help="FFT or CFT [full]")
    parser.add_argument("--encoder-dir", type=Path, help="base encoder [the packaged all-MiniLM-L6-v2]")
    parser.add_argument("--name", default="guardformer-minilm", help="model name in verdicts")
    parser.add_argument("--version", default="0.1.0", help="model version in verdicts")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    d = TrainSettings()
    parser.add_argument("--epochs", type=float, default=d.epochs)
    parser.add_argument("--max-steps", type=int, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--head-learning-rate", type=float, default=d.head_learning_rate)
    parser.add_argument("--max-length", type=int, default=d.max_length)
    parser.add_argument("--max-policy-tokens", type=int, default=d.max_policy_tokens)
    parser.add_argument("--max-positives", type=int, default=d.max_positives, help="per policy")
    parser.add_argument("--negatives-per-positive", type=float, default=d.negatives_per_positive)
    parser.add_argument(
        "--hard-negative-share",
        type=float,
        default=d.hard_negative_share,
        help="share of each policy's negatives taken from its look-alikes, the rest from unrelated "
        f"prompts [{d.hard_negative_share}]",
    )
    w = LossWeights()
    parser.add_argument("--lambda-mlm", type=float, default=w.mlm, help=f"λ1, masked LM [{w.mlm}]")
    parser.add_argument("--lambda-alice", type=float, default=w.alice, help=f"λ2, ALICE++ [{w.alice}]")
    parser.add_argument("--lambda-ce", type=float, default=w.ce, help=f"λ3, cross-entropy [{w.ce}]")
    parser.add_argument("--alpha", type=float, default=w.alpha, help="weight of the KL term in ALICE++")
    parser.add_argument("--epsilon", type=float, default=w.epsilon, help="perturbation norm per token")
    parser.add_argument(
        "--auxiliary-every", type=int, default=d.auxiliary_every, help="MLM + ALICE++ every n-th step [1]"
    )
    parser.add_argument(
        "--policy-variants",
        type=float,
        default=d.policy_variants,
        help="share of training rows that read the policy's name alone or its description alone [0]",
    )
    parser.add_argument(
        "--eval-max-positives", type=int, default=d.eval_max_positives, help="per policy and split [300]"
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="shift each trained policy's scores so its best validation F1 threshold lands on the "
        "policy's threshold (models/guardformer/calibration.py; more recall, often more false "
        "positives); `python -m models.guardformer.calibrate --max-fpr` bounds them",
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    return parser


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate, max_length=args.max_length,
        max_policy_tokens=args.max_policy_tokens, max_positives=args.max_positives,
        negatives_per_positive=args.negatives_per_positive, mode=args.mode, seed=args.seed,
        hard_negative_share=args.hard_negative_share,
        max_steps=args.max_steps, auxiliary_every=args.auxiliary_every,
        eval_max_positives=args.eval_max_positives, policy_variants=args.policy_variants,
    )  # fmt: skip
    weights = LossWeights(args.lambda_mlm, args.lambda_alice, args.lambda_ce, args.alpha, args.epsilon)
    policies = all_policies(args.policies or TRAINING_POLICY_FILES)
    unlabelled_scopes = sorted(
        pid for pid, p in policies.items() if p.is_scope and pid not in relations().scope
    )
    if unlabelled_scopes:  # their rows would be learnt as violations, then inverted when served
        print(
            f"error: scope policies outside {WRITTEN_POLICY_FILE.name} cannot be trained yet: "
            f"{', '.join(unlabelled_scopes)} (GuardFormer scores them zero-shot)",
            file=sys.stderr,
        )
        return 2
    if args.only_policy:
        if args.only_policy not in policies:
            print(f"error: unknown policy {args.only_policy!r}", file=sys.stderr)
            return 2
        train_ids = [args.only_policy]
    else:
        unknown = sorted(set(args.holdout_policies) - set(policies))
        if unknown:
            print(f"error: unknown held-out policies: {', '.join(unknown)}", file=sys.stderr)
            return 2
        train_ids = [pid for pid in policies if pid not in set(args.holdout_policies)]
    eval_ids = [args.only_policy] if args.only_policy else list(policies)
    base = args.encoder_dir or encoder_dir()
    tokenizer = InstructionTokenizer(base / "tokenizer.json", settings.max_length, settings.max_policy_tokens)
    if args.data_dir is None and not args.train_rows:
        print("guardstream train: give --data-dir, --train-rows or both", file=sys.stderr)
        return 2
    try:
        eval_prompts = train_prompts = load_rows(args.train_rows) if args.train_rows else []
        if args.data_dir is not None:
            eval_prompts = load_prompts(
                args.data_dir, args.handwritten or HANDWRITTEN_POLICY_FILES, [policies[i] for i in train_ids]
            )
            train_prompts = train_prompts or eval_prompts
    except FileNotFoundError as exc:
        print(f"guardstream train: {exc}", file=sys.stderr)
        return 2
    if not args.only_policy:
        hold_out([*train_prompts, *eval_prompts], args.holdout_policies)
    per_policy, ratio = settings.max_positives, settings.negatives_per_positive
    train_pairs = make_pairs(
        train_prompts, train_ids, "train", per_policy, ratio, settings.seed, settings.hard_negative_share
    )
    if not any(pair.label for pair in train_pairs):
        print(f"guardstream train: no training positives for {', '.join(train_ids)}", file=sys.stderr)
        return 2
    log.info("training pairs (positives, negatives): %s", pair_counts(train_pairs))
    device = choose_device(args.device)
    model = load_model(base, args.init_from).to(device)
    pair_encoder = PairEncoder(tokenizer, policies)
    trainer = Trainer(model, pair_encoder, weights, settings)
    speed = trainer.train(train_pairs)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_model(out, model, base, settings, [policies[i] for i in train_ids], args.name, args.version)
    thresholds = {pid: p.threshold for pid, p in policies.items()}
    report: dict[str, Any] = {}
    for split in ("validation", "test"):
        pairs = make_pairs(eval_prompts, eval_ids, split, settings.eval_max_positives, 2.0, seed=1)
        if not pairs:
            log.info("%s: no pairs to measure", split)
            continue
        scores = score_pairs(model, pair_encoder, pairs, device)
        report[split] = evaluate_pairs(scores, pairs, thresholds)
        log.info("%s: %s", split, {k: round(v["f1"], 3) for k, v in report[split].items()})
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.calibrate and "validation" in report:
        best = {pid: figures["best_f1_threshold"] for pid, figures in report["validation"].items()}
        write_calibration(out, calibration_entries([policies[i] for i in train_ids], best))
    train_record = {
        "command": "guardstream train --model guardformer " + shlex.join(args.argv),
        "settings": asdict(settings),
        "loss_weights": asdict(weights),
        "device": str(device),
        "trained_policies": train_ids,
        "held_out_policies": [] if args.only_policy else sorted(set(args.holdout_policies)),
        "pairs": {k: list(v) for k, v in pair_counts(train_pairs).items()},
        **speed,
        "history": trainer.history,
    }
    (out / "train.json").write_text(json.dumps(train_record, indent=2) + "\n")
    log.info("wrote %s (%s)", out, speed)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`argv`: the arguments after `guardstream train --model guardformer` (default: sys.argv's)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    args.argv = arguments
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
