"""The model directory format shared by every family: errors, `config.json`, ONNX files and their checks.

A model directory holds a `config.json` whose `kind` names its family ("embedder" when absent),
and either the weights the ONNX graph is built from at load (a trained directory) or ready ONNX
files, one per precision, each pinned by its SHA-256, with a `tokenizer.json` (an exported
directory). Each family's config class (`models.embedder.config`, `models.guardformer.config`)
reads and writes its own fields with the helpers here; nothing in this module knows a family.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The packaged default model (package data of `models`).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "artifacts" / "embedder-minilm"
#: The packaged GuardFormer: scores the registry's policies the default model does not know.
DEFAULT_GUARDFORMER_DIR = DEFAULT_MODEL_DIR.parent / "guardformer-minilm"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
#: The family of a directory whose config names none (the first format had no `kind`).
DEFAULT_KIND = "embedder"

#: Precisions an exported model can carry, and the order `auto` prefers them in per device. int8
#: (dynamic quantization) is the fastest on CPUs but its activation scales are computed per call,
#: so a prompt's scores move with its batch-mates (by a few 1e-2): `auto` never picks it, as a
#: cached score must not depend on the batch it was computed in. Ask for it with precision="int8".
PRECISIONS = ("fp32", "int8", "fp16")
PREFERENCE = {"cuda": ("fp16", "fp32"), "cpu": ("fp32", "fp16")}


class ModelDirectoryError(ValueError):
    """A model directory that cannot be loaded: the message names the directory and the problem."""


def inside(name: str, what: str) -> str:
    """`name` if it is a relative path that stays inside the model directory."""
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{what} must be a relative path inside the model directory, got {name!r}")
    return name


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*parts: object) -> str:
    """A short SHA-256 of `parts` as canonical JSON: what decides a model's scores, hashed."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class OnnxFile:
    """A ready ONNX graph at one precision, pinned by its SHA-256."""

    precision: str
    file: str
    sha256: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        inside(self.file, f"onnx {self.precision} file")


def onnx_files_from(raw: Any) -> tuple[OnnxFile, ...]:
    """The `onnx` entry of a config (precision -> {file, sha256}) as `OnnxFile`s."""
    entries = raw or {}
    if not isinstance(entries, Mapping):
        raise ValueError("onnx must be an object of precision -> {file, sha256}")
    return tuple(OnnxFile(str(p), str(e["file"]), str(e["sha256"])) for p, e in entries.items())


def onnx_files_to(files: tuple[OnnxFile, ...]) -> dict[str, dict[str, str]]:
    return {f.precision: {"file": f.file, "sha256": f.sha256} for f in files}


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object of a `config.json`; `ModelDirectoryError` for a missing or unreadable file."""
    if not path.is_file():
        raise ModelDirectoryError(f"no model config at {path} (is {path.parent} a model directory?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirectoryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelDirectoryError(f"{path}: not a JSON object")
    return raw


def write_config(path: Path, raw: Mapping[str, Any]) -> None:
    """Write a `config.json` (the one way every family saves its config)."""
    path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")


def kind_of(model_dir: Path) -> str:
    """The family named by the directory's `config.json`."""
    return str(read_config(model_dir / CONFIG_FILE).get("kind", DEFAULT_KIND))


def choose_onnx(files: tuple[OnnxFile, ...], device: str, precision: str, name: str) -> OnnxFile:
    """The exported file to run: `precision` if given, else the best one for the device (CUDA:
    fp16, then fp32; CPU: fp32, then fp16; int8 only when asked for, see PREFERENCE)."""
    by_precision = {f.precision: f for f in files}
    if precision != "auto":
        if precision not in by_precision:
            have = ", ".join(by_precision)
            raise ModelDirectoryError(f"{name}: no {precision} ONNX file (the directory has {have})")
        return by_precision[precision]
    for candidate in PREFERENCE["cuda" if device == "cuda" else "cpu"]:
        if candidate in by_precision:
            return by_precision[candidate]
    raise ModelDirectoryError(
        f"{name}: only int8 ONNX files, whose scores depend on the batch: "
        "set the precision to int8 explicitly to use them"
    )


def checked_onnx_file(model_dir: Path, chosen: OnnxFile) -> Path:
    """The path of `chosen` after checking that it exists and has the SHA-256 the config names."""
    path = model_dir / chosen.file
    if not path.is_file():
        raise ModelDirectoryError(f"{model_dir}: ONNX file {chosen.file} not found")
    actual = file_sha256(path)
    if actual != chosen.sha256.lower():
        raise ModelDirectoryError(
            f"{path}: SHA-256 {actual} differs from the config's {chosen.sha256}: "
            "the file is damaged or was replaced"
        )
    return path


def checked_file(model_dir: Path, name: str, what: str) -> Path:
    """`model_dir / name`, which must exist."""
    path = model_dir / name
    if not path.is_file():
        raise ModelDirectoryError(f"{model_dir}: {what} {name} not found")
    return path


def ort_errors() -> tuple[type[Exception], ...]:
    """The exception types ONNX Runtime raises for a model file it cannot load."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

    return (Fail, InvalidGraph, InvalidProtobuf)
