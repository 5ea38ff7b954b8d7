"""Writing an encoder directory: the layout `models.train.torch_encoder` and `bert_onnx` read.

    model.safetensors   float32 weights named as transformers' `BertModel` names them
    config.json         the BERT config
    tokenizer.json      the tokenizer (`tokenizers` format)
    conversion.json     where the weights came from and how they were made (`SOURCE_FILE`)

The directory is written aside and renamed into place, so it is never half written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from models.base.bert_onnx import WEIGHTS_FILE, file_sha256
from models.export.checks import atomic_directory

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
SOURCE_FILE = "conversion.json"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; `ValueError` naming the file otherwise."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return raw


def write_encoder(
    out: Path,
    weights: dict[str, npt.NDArray[np.float32]],
    config: dict[str, Any],
    tokenizer: Tokenizer,
    provenance: dict[str, Any],
) -> str:
    """Write the encoder directory `out`; returns the SHA-256 of its weights file."""
    with atomic_directory(out) as partial:
        contiguous = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in weights.items()}
        save_file(contiguous, str(partial / WEIGHTS_FILE), metadata={"format": "pt"})
        (partial / WEIGHTS_FILE).chmod(0o644)
        (partial / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tokenizer.save(str(partial / TOKENIZER_FILE), pretty=False)
        sha256 = file_sha256(partial / WEIGHTS_FILE)
        record = {**provenance, "weights_sha256": sha256}
        (partial / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return sha256
