"""Linear heads on sentence embeddings: a linear SVM (the paper's second head) and logistic regression.

Both are trained per policy on the rows whose target for that policy is known (the SVM with
the same row and class weights as the MLP head), and both become a one-layer `MlpHead` (one logit per
policy, then a sigmoid), so they are served and exported exactly like the MLP.

An SVM gives margins, not probabilities: its margins are mapped to probabilities by Platt
scaling fitted on the validation split (a one-feature logistic regression), folded into the
layer's weights. Logistic regression with scikit-learn's defaults is the baseline a user could
write in an afternoon.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from models.base.contract import FloatArray
from models.base.mlp_head import MlpHead
from models.train.mlp import Dataset, balanced_class_weights

log = logging.getLogger(__name__)

LinearKind = Literal["svm", "logreg"]


def _policy_rows(
    data: Dataset, policy: int, class_weights: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Features, 0/1 targets and sample weights of the rows with a known target for `policy`."""
    known = data.y[:, policy] >= 0
    y = data.y[known, policy]
    weight = data.weight[known] * np.where(y == 1, class_weights[1, policy], class_weights[0, policy])
    return data.x[known], y.astype(np.float32), weight.astype(np.float32)


def _platt(margins: FloatArray, y: FloatArray) -> tuple[float, float]:
    """(slope, intercept) mapping SVM margins to calibrated log-odds on held-out rows."""
    model = LogisticRegression(C=1e4, max_iter=1000)
    model.fit(margins.reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _fit_svm(
    train: tuple[FloatArray, FloatArray, FloatArray],
    validation: tuple[FloatArray, FloatArray],
    c: float,
    seed: int,
) -> tuple[FloatArray, float]:
    x, y, weight = train
    svm = LinearSVC(C=c, random_state=seed, max_iter=5000)
    svm.fit(x, y, sample_weight=weight)
    w, b = svm.coef_[0].astype(np.float32), float(svm.intercept_[0])
    x_val, y_val = validation
    if len(np.unique(y_val)) < 2:
        raise ValueError("Platt scaling needs validation rows of both classes for every policy")
    slope, intercept = _platt((x_val @ w + b).astype(np.float32), y_val)
    return (w * slope).astype(np.float32), b * slope + intercept


def _fit_logreg(train: tuple[FloatArray, FloatArray, FloatArray], c: float) -> tuple[FloatArray, float]:
    """scikit-learn's logistic regression as a user would first write it: no row or class weights."""
    x, y, _ = train
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x, y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def train_linear_head(
    kind: LinearKind, train: Dataset, validation: Dataset, c: float = 1.0, seed: int = 0
) -> MlpHead:
    """A one-layer head with one sigmoid output per policy (columns of `train.y`)."""
    class_weights = balanced_class_weights(train)
    n_policies = train.y.shape[1]
    weights = np.zeros((train.x.shape[1], n_policies), dtype=np.float32)
    biases = np.zeros(n_policies, dtype=np.float32)
    for policy in range(n_policies):
        rows = _policy_rows(train, policy, class_weights)
        if kind == "svm":
            x_val, y_val, _ = _policy_rows(validation, policy, class_weights)
            w, b = _fit_svm(rows, (x_val, y_val), c, seed)
        else:
            w, b = _fit_logreg(rows, c)
        weights[:, policy], biases[policy] = w, b
        log.info("%s head: policy %d trained on %d rows", kind, policy, len(rows[1]))
    return MlpHead((weights,), (biases,))
