"""A small multi-layer perceptron on top of sentence embeddings: ReLU hidden layers, sigmoid outputs.

The weights are plain numpy arrays stored in a safetensors file (`layers.<i>.weight` of shape
[inputs, outputs] and `layers.<i>.bias`), so the head can be trained without torch and added to the
ONNX graph as Gemm nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from models.base.contract import FloatArray


@dataclass(frozen=True)
class MlpHead:
    """Dense layers `x @ weights[i] + biases[i]`, ReLU between them, sigmoid at the end."""

    weights: tuple[FloatArray, ...]
    biases: tuple[FloatArray, ...]

    def __post_init__(self) -> None:
        if not self.weights or len(self.weights) != len(self.biases):
            raise ValueError("a head needs one bias per weight matrix and at least one layer")
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if weight.ndim != 2 or bias.shape != (weight.shape[1],):
                raise ValueError(f"layer {index}: weight {weight.shape} does not match bias {bias.shape}")
            if index and weight.shape[0] != self.weights[index - 1].shape[1]:
                raise ValueError(f"layer {index}: expects {weight.shape[0]} inputs")

    @property
    def n_inputs(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.weights[-1].shape[1])

    def logits(self, features: FloatArray) -> FloatArray:
        """Pre-sigmoid outputs for a [n, n_inputs] array."""
        hidden = np.asarray(features, dtype=np.float32)
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = hidden @ weight + bias
            if index < last:
                hidden = np.maximum(hidden, 0.0)
        return hidden.astype(np.float32)

    def predict(self, features: FloatArray) -> FloatArray:
        """Probabilities [n, n_outputs] for a [n, n_inputs] array."""
        return sigmoid(self.logits(features))

    def save(self, path: Path) -> None:
        """Write the weights to a safetensors file."""
        tensors: dict[str, np.ndarray] = {}
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            tensors[f"layers.{index}.weight"] = np.ascontiguousarray(weight, dtype=np.float32)
            tensors[f"layers.{index}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        save_file(tensors, str(path), metadata={"format": "mlp-head", "layers": str(len(self.weights))})
        path.chmod(0o644)

    @classmethod
    def load(cls, path: Path) -> MlpHead:
        """Read the weights written by `save`."""
        tensors = load_file(str(path))
        count = len(tensors) // 2
        try:
            weights = tuple(tensors[f"layers.{i}.weight"].astype(np.float32) for i in range(count))
            biases = tuple(tensors[f"layers.{i}.bias"].astype(np.float32) for i in range(count))
        except KeyError as exc:
            raise ValueError(f"{path}: not an MLP head file (missing {exc})") from exc
        return cls(weights, biases)


def sigmoid(logits: FloatArray) -> FloatArray:
    """Numerically stable logistic function."""
    out = np.empty_like(logits, dtype=np.float32)
    positive = logits >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-logits[positive]))
    exp = np.exp(logits[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out
