"""The merge objective: mean F1 over policies of a candidate's torch scores on validation pairs.

Validation pairs come from the shared datasets (`models.train.guardformer_data`: the split
"validation", up to `max_positives` positives per policy and twice as many negatives, drawn per
policy with a fixed seed, as the GuardFormer benchmark draws them) or from a rows file of JSON
lines `{"text", "policy", "label", "split"}` (its "validation" rows, capped the same way). A pair
is flagged when its score reaches the policy's threshold from the policy files, as training
measures it.

One torch model is built once; each candidate's weights are loaded into it in turn.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.base.text import normalize_text
from models.guardformer.instruction import InstructionTokenizer
from models.merge.search import Candidate
from models.merge.weights import MergeError, ModelWeights, Weights, split_weights
from models.policies import PolicyDefinition
from models.train.guardformer_data import Pair, load_prompts, make_pairs
from models.train.guardformer_io import PairEncoder, evaluate_pairs, load_model, score_pairs
from models.train.guardformer_model import GuardFormerModel

log = logging.getLogger(__name__)

SPLIT = "validation"
NEGATIVES_PER_POSITIVE = 2.0
#: Metrics kept per policy for the models compared in the report.
REPORTED_METRICS = ("f1", "auprc", "precision", "recall", "fpr", "n_positive", "n_negative")


def pairs_from_data(
    data_dir: Path, handwritten: Sequence[Path], policy_ids: Sequence[str], max_positives: int, seed: int
) -> list[Pair]:
    """Validation pairs of the shared datasets and hand-written rows, drawn per policy."""
    prompts = load_prompts(data_dir, handwritten)
    return [
        pair
        for policy in policy_ids
        for pair in make_pairs(prompts, [policy], SPLIT, max_positives, NEGATIVES_PER_POSITIVE, seed)
    ]


def read_rows(path: Path) -> list[dict[str, object]]:
    """JSON lines {"text", "policy", "label", "split"}; a clear error names the bad line."""
    rows: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                missing = {"text", "policy", "label", "split"} - set(row)
            except (ValueError, TypeError) as exc:
                raise MergeError(f"{path}:{number}: not a JSON object ({exc})") from exc
            if missing:
                raise MergeError(f"{path}:{number}: missing {', '.join(sorted(missing))}")
            rows.append(row)
    return rows


def pairs_from_rows(path: Path, policy_ids: Sequence[str], max_positives: int, seed: int) -> list[Pair]:
    """The rows file's validation pairs of the chosen policies, capped as the shared data's."""
    by_policy: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in read_rows(path):
        if row["split"] == SPLIT and row["policy"] in policy_ids:
            positives, negatives = by_policy[str(row["policy"])]
            (positives if int(str(row["label"])) == 1 else negatives).append(normalize_text(str(row["text"])))
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    pairs: list[Pair] = []
    for policy in policy_ids:
        positives, negatives = (list(texts) for texts in by_policy[policy])
        rng.shuffle(positives)
        rng.shuffle(negatives)
        positives = positives[:max_positives]
        negatives = negatives[: round(len(positives) * NEGATIVES_PER_POSITIVE)]
        pairs += [Pair(policy, t, 1, SPLIT) for t in positives] + [
            Pair(policy, t, 0, SPLIT) for t in negatives
        ]
    return pairs


def pair_counts(pairs: Sequence[Pair], policy_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """policy -> (positives, negatives), every chosen policy listed."""
    counts = {policy: [0, 0] for policy in policy_ids}
    for pair in pairs:
        counts[pair.policy][1 - pair.label] += 1
    return {policy: (pos, neg) for policy, (pos, neg) in counts.items()}


def unscorable(pairs: Sequence[Pair], policy_ids: Sequence[str]) -> list[str]:
    """The policies whose pairs lack positives or negatives (F1 means nothing for them)."""
    return [p for p, (pos, neg) in pair_counts(pairs, policy_ids).items() if not pos or not neg]


def policy_metrics(
    scores: np.ndarray, pairs: Sequence[Pair], thresholds: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """Per policy: F1, AUPRC, precision, recall, FPR and counts at the policy's threshold."""
    found = evaluate_pairs(scores, pairs, dict(thresholds))
    return {policy: {name: figures[name] for name in REPORTED_METRICS} for policy, figures in found.items()}


def mean_f1(per_policy: Mapping[str, Mapping[str, float]]) -> float:
    return float(np.mean([m["f1"] for m in per_policy.values()])) if per_policy else 0.0


def load_into(model: GuardFormerModel, flat: Weights) -> None:
    """Replace the model's encoder and head weights by those of a flat dict."""
    encoder, head = split_weights(flat)
    try:
        model.encoder.bert.load_state_dict(encoder, strict=True)
    except RuntimeError as exc:
        raise MergeError(f"the merged encoder weights do not fit the model: {exc}") from exc
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    if len(head) != 2 * len(linears):
        raise MergeError(f"the merged head has {len(head) // 2} layers, the model {len(linears)}")
    with torch.no_grad():
        for index, linear in enumerate(linears):
            linear.weight.copy_(head[f"layers.{index}.weight"].T)
            linear.bias.copy_(head[f"layers.{index}.bias"])


class PairScorer:
    """Scores fixed pairs with a torch GuardFormer whose weights are swapped per model."""

    def __init__(
        self,
        reference: ModelWeights,
        pairs: Sequence[Pair],
        policies: Mapping[str, PolicyDefinition],
        device: torch.device,
    ) -> None:
        config = reference.config
        tokenizer = InstructionTokenizer(
            reference.encoder_dir / "tokenizer.json",
            int(config["max_length"]),
            int(config["max_policy_tokens"]),
        )
        used = {p.policy for p in pairs}
        self.encoder = PairEncoder(tokenizer, {pid: policies[pid] for pid in used})
        self.model = load_model(reference.encoder_dir, init_from=reference.directory).to(device)
        self.device = device
        self.pairs = list(pairs)
        self.thresholds = {pid: policies[pid].threshold for pid in used}

    def evaluate(self, flat: Weights) -> dict[str, dict[str, float]]:
        """Per-policy metrics of the model with these weights."""
        load_into(self.model, flat)
        scores = score_pairs(self.model, self.encoder, self.pairs, self.device)
        return policy_metrics(scores, self.pairs, self.thresholds)


@dataclass
class MergeObjective:
    """Candidate -> mean validation F1; keeps each candidate's per-policy metrics in `results`."""

    scorer: PairScorer
    build: Callable[[Candidate], Weights | None]
    results: dict[Candidate, dict[str, dict[str, float]]] = field(default_factory=dict)

    def __call__(self, candidate: Candidate) -> float:
        weights = self.build(candidate)
        if weights is None:  # a candidate no model can be built from scores nothing
            self.results[candidate] = {}
            return 0.0
        self.results[candidate] = self.scorer.evaluate(weights)
        return mean_f1(self.results[candidate])

    def f1(self, candidate: Candidate) -> dict[str, float]:
        """The candidate's F1 per policy."""
        return {policy: m["f1"] for policy, m in self.results[candidate].items()}
