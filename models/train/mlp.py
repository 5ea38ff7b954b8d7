"""Multi-label MLP head training in numpy: one hidden ReLU layer, one sigmoid output per policy.

The loss is binary cross-entropy per policy, weighted per row, with unknown targets (-1) left out,
so a row can teach one policy and say nothing about the other. AdamW, dropout on the hidden layer,
early stopping on the validation loss (the best epoch's weights are kept).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from models.base.contract import FloatArray
from models.base.mlp_head import MlpHead, sigmoid

log = logging.getLogger(__name__)

TargetArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class MlpSettings:
    """Hyper-parameters of the head."""

    hidden: int = 128
    epochs: int = 80
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    patience: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Dataset:
    """Features, targets in {-1, 0, 1} and row weights."""

    x: FloatArray
    y: TargetArray
    weight: FloatArray

    def loss_weights(self, class_weights: FloatArray) -> FloatArray:
        """Per row and policy: row weight times class weight, zero where the target is unknown."""
        known = self.y >= 0
        per_class = np.where(self.y == 1, class_weights[1], class_weights[0])
        weights: FloatArray = (known * per_class * self.weight[:, None]).astype(np.float32)
        return weights


def balanced_class_weights(data: Dataset) -> FloatArray:
    """[2, n_policies]: weights making negatives and positives of each policy count equally."""
    weights = np.ones((2, data.y.shape[1]), dtype=np.float32)
    for policy in range(data.y.shape[1]):
        known = data.y[:, policy] >= 0
        positives = float((data.weight * (data.y[:, policy] == 1)).sum())
        total = float((data.weight * known).sum())
        if 0 < positives < total:
            weights[1, policy] = total / (2 * positives)
            weights[0, policy] = total / (2 * (total - positives))
    return weights


class _Trainer:
    """Parameters, AdamW state and the forward/backward pass."""

    def __init__(self, n_in: int, n_out: int, settings: MlpSettings) -> None:
        self.s = settings
        self.rng = np.random.default_rng(settings.seed)
        scale = np.sqrt(2.0 / n_in)
        self.params = [
            (self.rng.standard_normal((n_in, settings.hidden)) * scale).astype(np.float32),
            np.zeros(settings.hidden, dtype=np.float32),
            (self.rng.standard_normal((settings.hidden, n_out)) * np.sqrt(1.0 / settings.hidden)).astype(
                np.float32
            ),
            np.zeros(n_out, dtype=np.float32),
        ]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def head(self) -> MlpHead:
        w1, b1, w2, b2 = (p.copy() for p in self.params)
        return MlpHead((w1, w2), (b1, b2))

    def step(self, x: FloatArray, y: TargetArray, lw: FloatArray) -> None:
        w1, b1, w2, b2 = self.params
        pre = x @ w1 + b1
        keep = (self.rng.random(pre.shape) >= self.s.dropout) / (1.0 - self.s.dropout)
        hidden = np.maximum(pre, 0.0) * keep
        logits = hidden @ w2 + b2
        dz = (sigmoid(logits) - np.maximum(y, 0)) * lw / max(float(lw.sum()), 1e-6)
        dh = (dz @ w2.T) * (pre > 0) * keep
        grads = [x.T @ dh, dh.sum(axis=0), hidden.T @ dz, dz.sum(axis=0)]
        self._adamw(grads)

    def _adamw(self, grads: list[FloatArray], beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.t += 1
        lr = self.s.learning_rate
        for index, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            self.m[index] = beta1 * self.m[index] + (1 - beta1) * grad
            self.v[index] = beta2 * self.v[index] + (1 - beta2) * grad * grad
            m_hat = self.m[index] / (1 - beta1**self.t)
            v_hat = self.v[index] / (1 - beta2**self.t)
            decay = self.s.weight_decay * param if param.ndim == 2 else 0.0
            self.params[index] = (param - lr * (m_hat / (np.sqrt(v_hat) + 1e-8) + decay)).astype(np.float32)


def weighted_bce(head: MlpHead, data: Dataset, class_weights: FloatArray) -> float:
    """Mean binary cross-entropy over known targets, with the training weights."""
    logits = head.logits(data.x)
    lw = data.loss_weights(class_weights)
    targets = np.maximum(data.y, 0)
    losses = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return float((losses * lw).sum() / max(float(lw.sum()), 1e-6))


def train_mlp(train: Dataset, validation: Dataset, settings: MlpSettings) -> tuple[MlpHead, list[float]]:
    """The head with the lowest validation loss, and the validation loss of every epoch run."""
    class_weights = balanced_class_weights(train)
    trainer = _Trainer(train.x.shape[1], train.y.shape[1], settings)
    lw = train.loss_weights(class_weights)
    best, best_loss, history = trainer.head(), np.inf, []
    for _ in tqdm(range(settings.epochs), desc="training head", unit="epoch"):
        order = trainer.rng.permutation(len(train.x))
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            trainer.step(train.x[rows], train.y[rows], lw[rows])
        history.append(weighted_bce(trainer.head(), validation, class_weights))
        if history[-1] < best_loss:
            best, best_loss = trainer.head(), history[-1]
        elif len(history) - int(np.argmin(history)) > settings.patience:
            break
    log.info(
        "best validation loss %.4f at epoch %d of %d", best_loss, int(np.argmin(history)) + 1, len(history)
    )
    return best, history
