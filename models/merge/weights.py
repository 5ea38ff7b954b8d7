"""GuardFormer model directories as flat name -> tensor dicts, and the check that they can be merged.

A trained GuardFormer directory (`models.train.train_guardformer.save_model`) holds the BERT
weights in `encoder/model.safetensors` and the MLP head in `head.safetensors`. Here both become
one dict whose names carry the file they came from: `encoder.<BERT name>` and `head.<head name>`
(`head.layers.0.weight`, ...). Merging works on those dicts entry by entry; models merge only
when they have the same encoder configuration and the same names, shapes and dtypes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from models.guardformer.config import KIND

ENCODER_PREFIX = "encoder."
HEAD_PREFIX = "head."
CONFIG_FILE = "config.json"
ENCODER_WEIGHTS = "model.safetensors"
#: BERT configuration fields that change what the weights mean (not only their shapes).
ARCHITECTURE_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "position_embedding_type",
)

Weights = dict[str, torch.Tensor]


class MergeError(ValueError):
    """A merge that cannot be done; the message names the directories and the problem."""


@dataclass(frozen=True)
class ModelWeights:
    """One model directory: its config, its encoder's BERT config and its weights."""

    directory: Path
    config: dict[str, Any]
    encoder_config: dict[str, Any]
    tensors: Weights

    @property
    def encoder_dir(self) -> Path:
        return self.directory / str(self.config["encoder"]["path"])

    @property
    def trained_policies(self) -> list[dict[str, Any]]:
        """The `trained_policies` entries of config.json (id, version, fingerprint)."""
        return list(self.config.get("trained_policies") or [])


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MergeError(f"{path}: cannot read the {what} ({exc})") from exc
    if not isinstance(raw, dict):
        raise MergeError(f"{path}: the {what} is not a JSON object")
    return raw


def read_model_config(directory: Path) -> dict[str, Any]:
    """config.json of a trained GuardFormer directory (with an encoder and a head)."""
    if not directory.is_dir():
        raise MergeError(f"{directory}: no such model directory")
    config = _read_json(directory / CONFIG_FILE, "model config")
    if config.get("kind") != KIND:
        raise MergeError(f"{directory}: kind is {config.get('kind')!r}, not a {KIND!r} model directory")
    if not isinstance(config.get("encoder"), dict) or not config.get("head"):
        raise MergeError(
            f"{directory}: has no encoder and head weights (an exported directory?): "
            "merge the trained directories"
        )
    return config


def load_weights(directory: Path) -> ModelWeights:
    """Read a trained GuardFormer directory into a flat dict (see the module docstring)."""
    config = read_model_config(directory)
    encoder_dir = directory / str(config["encoder"]["path"])
    paths = {ENCODER_PREFIX: encoder_dir / ENCODER_WEIGHTS, HEAD_PREFIX: directory / str(config["head"])}
    tensors: Weights = {}
    for prefix, path in paths.items():
        if not path.is_file():
            raise MergeError(f"{directory}: missing weights file {path}")
        tensors |= {prefix + name: tensor for name, tensor in load_file(str(path)).items()}
    encoder_config = _read_json(encoder_dir / CONFIG_FILE, "encoder config")
    return ModelWeights(directory, config, encoder_config, tensors)


def first_difference(reference: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor]) -> str | None:
    """How `other` first differs from `reference` (names in sorted order), or None when it does not."""
    for name in sorted(set(reference) | set(other)):
        if name not in other:
            return f"{name} is missing from the second"
        if name not in reference:
            return f"{name} is only in the second"
        left, right = reference[name], other[name]
        if left.shape != right.shape:
            return f"{name} has shape {tuple(left.shape)} in the first and {tuple(right.shape)} in the second"
        if left.dtype != right.dtype:
            return f"{name} has dtype {left.dtype} in the first and {right.dtype} in the second"
    return None


def _config_difference(reference: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
    for field in ARCHITECTURE_FIELDS:
        if reference.get(field) != other.get(field):
            return (
                f"encoder {field} is {reference.get(field)!r} in the first and {other.get(field)!r} "
                "in the second"
            )
    return None


def check_same_architecture(models: Sequence[ModelWeights]) -> None:
    """Raise `MergeError` naming the first mismatching field, key or shape and both directories."""
    reference = models[0]
    for other in models[1:]:
        difference = _config_difference(reference.encoder_config, other.encoder_config)
        difference = difference or first_difference(reference.tensors, other.tensors)
        if difference is not None:
            raise MergeError(
                f"{reference.directory} and {other.directory} do not share an architecture: {difference}"
            )


def split_weights(flat: Mapping[str, torch.Tensor]) -> tuple[Weights, Weights]:
    """(encoder weights named as BERT names them, head weights named as the head file names them)."""
    encoder = {k.removeprefix(ENCODER_PREFIX): v for k, v in flat.items() if k.startswith(ENCODER_PREFIX)}
    head = {k.removeprefix(HEAD_PREFIX): v for k, v in flat.items() if k.startswith(HEAD_PREFIX)}
    return encoder, head
