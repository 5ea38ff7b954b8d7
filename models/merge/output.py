"""The merged weights written as a normal GuardFormer model directory, atomically.

Same layout as training writes (`models.train.train_guardformer.save_model`): `encoder/` with
`model.safetensors`, the BERT `config.json` and the tokenizer files of the reference model (the
base, else the first parent), `head.safetensors`, and `config.json` (kind "guardformer", name,
version, the reference's input lengths, encoder path and SHA-256, head file, trained policies)
with a `merge` block saying how the weights were made. The directory is written beside its
final place and renamed into it, so a failed merge never leaves half a model behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from models.base.bert_onnx import file_sha256
from models.base.mlp_head import MlpHead
from models.export.checks import atomic_directory
from models.guardformer.config import ENCODER_SUBDIR, HEAD_FILE, GuardFormerConfig
from models.merge.weights import CONFIG_FILE, ENCODER_WEIGHTS, ModelWeights, Weights, split_weights
from models.train.torch_encoder import TOKENIZER_FILES


def union_of_policies(models: Sequence[ModelWeights]) -> list[dict[str, Any]]:
    """The models' trained policies, each id once (first seen wins), in order of appearance."""
    seen: dict[str, dict[str, Any]] = {}
    for model in models:
        for entry in model.trained_policies:
            seen.setdefault(str(entry["id"]), dict(entry))
    return list(seen.values())


def head_from_weights(head: Mapping[str, Any]) -> MlpHead:
    count = len(head) // 2
    return MlpHead(
        tuple(
            np.ascontiguousarray(head[f"layers.{i}.weight"].numpy(), dtype=np.float32) for i in range(count)
        ),
        tuple(np.ascontiguousarray(head[f"layers.{i}.bias"].numpy(), dtype=np.float32) for i in range(count)),
    )


def write_encoder(out: Path, encoder: Weights, reference: ModelWeights) -> Path:
    """encoder/: merged BERT weights, the reference's BERT config and tokenizer files."""
    out.mkdir(parents=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in encoder.items()}
    save_file(tensors, str(out / ENCODER_WEIGHTS), metadata={"format": "pt"})
    for name in (CONFIG_FILE, *TOKENIZER_FILES):
        if (reference.encoder_dir / name).is_file():
            shutil.copyfile(reference.encoder_dir / name, out / name)
    return out / ENCODER_WEIGHTS


def model_config(
    reference: ModelWeights,
    encoder_sha256: str,
    name: str,
    version: str,
    trained_policies: list[dict[str, Any]],
    merge: dict[str, Any],
) -> GuardFormerConfig:
    return GuardFormerConfig(
        name=name,
        version=version,
        max_length=int(reference.config["max_length"]),
        max_policy_tokens=int(reference.config["max_policy_tokens"]),
        encoder_path=ENCODER_SUBDIR,
        encoder_sha256=encoder_sha256,
        head_file=HEAD_FILE,
        trained_policies=tuple(trained_policies),
        merge=merge,
    )


def write_merged_model(
    out: Path,
    weights: Weights,
    reference: ModelWeights,
    name: str,
    version: str,
    trained_policies: list[dict[str, Any]],
    merge: dict[str, Any],
    extra_files: Mapping[str, str] | None = None,
) -> None:
    """Write the model directory `out` (replacing it) with `extra_files` (name -> text) beside."""
    encoder, head = split_weights(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out) as partial:
        weights_file = write_encoder(partial / ENCODER_SUBDIR, encoder, reference)
        head_from_weights(head).save(partial / HEAD_FILE)
        config = model_config(reference, file_sha256(weights_file), name, version, trained_policies, merge)
        config.save(partial / CONFIG_FILE)
        for file_name, text in (extra_files or {}).items():
            (partial / file_name).write_text(text, encoding="utf-8")
