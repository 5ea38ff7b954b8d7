"""A torch GuardFormer as training, export, merging and calibration use it: load, score, calibrate.

Library code of the offline tools (never of the worker, which serves the ONNX graph):
`PairEncoder` builds the (policy, prompt) rows exactly as serving does, `load_model` opens a
trained directory (or the base encoder with a fresh head), `score_pairs` scores pairs as the
worker would (the maximum over the prompt's windows), `evaluate_pairs` measures them per policy,
and `write_calibration` stores calibration shifts through the directory's config class.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.base.directory import CONFIG_FILE
from models.base.mlp_head import MlpHead
from models.base.windows import pad_windows
from models.guardformer.calibration import UNSEEN
from models.guardformer.config import ENCODER_SUBDIR, HEAD_FILE, GuardFormerConfig
from models.guardformer.instruction import InstructionTokenizer
from models.policies import PolicyDefinition
from models.train import metrics
from models.train.guardformer_data import Pair
from models.train.guardformer_model import GuardFormerModel
from models.train.torch_encoder import SentenceEncoder

log = logging.getLogger("guardstream.guardformer")


@dataclass(frozen=True)
class _Words:
    name: str
    description: str


class PairEncoder:
    """Token ids of pairs, with each policy's prefix tokenized once."""

    def __init__(self, tokenizer: InstructionTokenizer, policies: dict[str, PolicyDefinition]) -> None:
        self.tokenizer = tokenizer
        self._prefixes = {pid: tokenizer.encode_policy(p) for pid, p in policies.items()}
        #: the policy as a user might write it instead: its name alone, its description alone
        self._variants = {
            pid: (
                tokenizer.encode_policy(_Words(p.name, "")),
                tokenizer.encode_policy(_Words(p.description, "")),
            )
            for pid, p in policies.items()
        }

    def ids(self, pairs: Sequence[Pair], variant_rate: float = 0.0, seed: int = 0) -> list[np.ndarray]:
        """One row per pair: the policy and the prompt's first window (what training sees).

        With `variant_rate` > 0 that share of the rows reads the policy's name alone or its
        description alone (half each), so the model does not lean on one way of writing a policy.
        """
        windows = self.tokenizer.encode_prompts([p.text for p in pairs])
        rng = np.random.default_rng(seed)
        rows = []
        for pair, encoded in zip(pairs, windows, strict=True):
            prefix = self._prefixes[pair.policy]
            if variant_rate > 0 and rng.random() < variant_rate:
                prefix = self._variants[pair.policy][int(rng.integers(2))]
            rows.append(self.tokenizer.pair(prefix, encoded.windows[0]))
        return rows

    def window_ids(self, pairs: Sequence[Pair]) -> tuple[list[np.ndarray], list[int]]:
        """Every window of every pair, and the pair each row belongs to (what serving scores)."""
        windows = self.tokenizer.encode_prompts([p.text for p in pairs])
        rows: list[np.ndarray] = []
        owners: list[int] = []
        for index, (pair, encoded) in enumerate(zip(pairs, windows, strict=True)):
            for window in encoded.windows:
                rows.append(self.tokenizer.pair(self._prefixes[pair.policy], window))
                owners.append(index)
        return rows, owners

    def tensors(self, ids: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = pad_windows(ids, self.tokenizer.pad_id)
        return torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device)


def load_model(encoder: Path, init_from: Path | None) -> GuardFormerModel:
    """The base encoder with a fresh head, or a trained GuardFormer directory."""
    if init_from is None:
        return GuardFormerModel(SentenceEncoder.from_dir(encoder))
    head = MlpHead.load(init_from / HEAD_FILE)
    hidden = int(head.weights[0].shape[1])
    model = GuardFormerModel(SentenceEncoder.from_dir(init_from / ENCODER_SUBDIR), head_hidden=hidden)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for linear, weight, bias in zip(linears, head.weights, head.biases, strict=True):
            linear.weight.copy_(torch.from_numpy(weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias.copy()))
    return model


def head_of(model: GuardFormerModel) -> MlpHead:
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    return MlpHead(
        tuple(l.weight.detach().cpu().numpy().T.copy() for l in linears),  # noqa: E741
        tuple(l.bias.detach().cpu().numpy().copy() for l in linears),  # noqa: E741
    )


def score_pairs(
    model: GuardFormerModel,
    encoder: PairEncoder,
    pairs: Sequence[Pair],
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """P(violation) of each pair, the maximum over the prompt's windows as the worker scores it;
    length-sorted batches, no gradients."""
    ids, owners = encoder.window_ids(pairs)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    row_scores = np.zeros(len(ids), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = encoder.tensors([ids[i] for i in rows], device)
            row_scores[rows] = torch.sigmoid(model(mask, input_ids=input_ids)).float().cpu().numpy()
    scores = np.full(len(pairs), -np.inf, dtype=np.float32)
    np.maximum.at(scores, np.asarray(owners, dtype=np.int64), row_scores)
    return scores


def evaluate_pairs(
    scores: np.ndarray, pairs: Sequence[Pair], thresholds: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per policy: metrics at the policy's threshold and the best-F1 threshold of these pairs."""
    report: dict[str, dict[str, float]] = {}
    for policy in sorted({p.policy for p in pairs}):
        rows = [i for i, p in enumerate(pairs) if p.policy == policy]
        y = np.asarray([pairs[i].label for i in rows], dtype=np.int64)
        s = scores[rows]
        if len(set(y.tolist())) < 2:
            continue
        at_policy = metrics.binary_metrics(y, s, thresholds.get(policy, 0.5))
        best = metrics.max_f1_threshold(y, s)
        report[policy] = {
            **at_policy,
            "best_f1_threshold": round(best, 6),
            "f1_at_best": metrics.binary_metrics(y, s, best)["f1"],
        }
    return report


def write_calibration(out: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Record calibration shifts in the model directory's config.json: per-policy entries replace
    the old ones; the shift for unseen policies is kept unless `entries` brings one."""
    config_file = out / CONFIG_FILE
    config = GuardFormerConfig.load(config_file)
    kept = {key: entry for key, entry in config.calibration.items() if key == UNSEEN}
    config.with_calibration({**kept, **entries}).save(config_file)
    shifts = {pid: (e.get("best_threshold"), round(e["shift"], 3)) for pid, e in entries.items()}
    log.info("calibration (best threshold, logit shift): %s", shifts)
