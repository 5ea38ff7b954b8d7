"""The `config.json` of an embedder guard model directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base.contract import ModelInfo, Policy

KIND = "embedder"
#: Longest window the encoder's position table allows.
MAX_POSITIONS = 512


@dataclass(frozen=True)
class EncoderRef:
    """The encoder the head was trained on, pinned by the SHA-256 of its weights.

    Either a Python package carrying it (`package`) or an encoder directory inside the model
    directory (`path`, relative), such as a fine-tuned encoder.
    """

    package: str | None
    sha256: str
    path: str | None = None

    @classmethod
    def local(cls, path: str, sha256: str) -> EncoderRef:
        """An encoder directory inside the model directory."""
        return cls(None, sha256, path)

    def to_dict(self) -> dict[str, str]:
        where = {"package": self.package} if self.package is not None else {"path": str(self.path)}
        return {**where, "sha256": self.sha256}


#: Precisions an exported model can carry, and the order `auto` prefers them in per device. int8
#: (dynamic quantization) is the fastest on CPUs but its activation scales are computed per call,
#: so a prompt's scores move with its batch-mates (by a few 1e-2): `auto` never picks it, as a
#: cached score must not depend on the batch it was computed in. Ask for it with precision="int8".
PRECISIONS = ("fp32", "int8", "fp16")
PREFERENCE = {"cuda": ("fp16", "fp32"), "cpu": ("fp32", "fp16")}


class ModelDirectoryError(ValueError):
    """A model directory that cannot be loaded: the message names the directory and the problem."""


def _inside(name: str, what: str) -> str:
    """`name` if it is a relative path that stays inside the model directory."""
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{what} must be a relative path inside the model directory, got {name!r}")
    return name


@dataclass(frozen=True)
class OnnxFile:
    """A ready ONNX graph (encoder, pooling and head) at one precision, pinned by its SHA-256."""

    precision: str
    file: str
    sha256: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        _inside(self.file, f"onnx {self.precision} file")


@dataclass(frozen=True)
class GuardConfig:
    """Name, version, policies, windowing and the files the model is built from.

    `max_length` counts `[CLS]` and `[SEP]`; `window_stride` is the distance in tokens between the
    starts of consecutive windows of a long prompt.
    """

    name: str
    version: str
    policies: tuple[Policy, ...]
    max_length: int
    window_stride: int
    encoder: EncoderRef | None
    head_file: str | None = "head.safetensors"
    onnx: tuple[OnnxFile, ...] = ()
    tokenizer_file: str | None = None

    def __post_init__(self) -> None:
        ids = [p.id for p in self.policies]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"policies must be non-empty with unique ids, got {ids}")
        for policy in self.policies:
            if not 0.0 <= policy.threshold <= 1.0:
                raise ValueError(f"threshold of {policy.id} must be in [0, 1], got {policy.threshold}")
        if not 3 <= self.max_length <= MAX_POSITIONS:
            raise ValueError(f"max_length must be in [3, {MAX_POSITIONS}], got {self.max_length}")
        if not 1 <= self.window_stride <= self.max_length - 2:
            raise ValueError(f"window_stride must be in [1, {self.max_length - 2}], got {self.window_stride}")
        if self.onnx:
            if self.tokenizer_file is None:
                raise ValueError("a model with onnx files needs a tokenizer file")
            _inside(self.tokenizer_file, "tokenizer")
        elif self.encoder is None or self.head_file is None:
            raise ValueError("a model needs either onnx files and a tokenizer, or an encoder and a head")
        if self.head_file is not None:
            _inside(self.head_file, "head")
        if self.encoder is not None and self.encoder.path is not None:
            _inside(self.encoder.path, "encoder path")
        if self.encoder is not None and (self.encoder.package is None) == (self.encoder.path is None):
            raise ValueError("encoder needs exactly one of package and path")

    def onnx_file(self, precision: str) -> OnnxFile | None:
        return next((f for f in self.onnx if f.precision == precision), None)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.version, self.policies, self.max_length)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GuardConfig:
        if raw.get("kind", KIND) != KIND:
            raise ValueError(f"not an embedder guard config (kind={raw.get('kind')!r})")
        encoder = raw.get("encoder")
        onnx = raw.get("onnx") or {}
        if not isinstance(onnx, dict):
            raise ValueError("onnx must be an object of precision -> {file, sha256}")
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            policies=tuple(
                Policy(str(p["id"]), str(p["version"]), float(p["threshold"])) for p in raw["policies"]
            ),
            max_length=int(raw["max_length"]),
            window_stride=int(raw["window_stride"]),
            encoder=EncoderRef(encoder.get("package"), str(encoder["sha256"]), encoder.get("path"))
            if encoder is not None
            else None,
            head_file=str(raw["head"]) if raw.get("head") is not None else None,
            onnx=tuple(
                OnnxFile(str(precision), str(entry["file"]), str(entry["sha256"]))
                for precision, entry in onnx.items()
            ),
            tokenizer_file=str(raw["tokenizer"]) if raw.get("tokenizer") is not None else None,
        )

    @classmethod
    def load(cls, path: Path) -> GuardConfig:
        """Read and validate a `config.json`; `ModelDirectoryError` says what is wrong."""
        if not path.is_file():
            raise ModelDirectoryError(f"{path.parent}: no config.json (is this a model directory?)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelDirectoryError(f"{path}: not valid JSON ({exc})") from exc
        try:
            if not isinstance(raw, dict):
                raise TypeError("expected a JSON object")
            return cls.from_dict(raw)
        except KeyError as exc:
            raise ModelDirectoryError(f"{path}: invalid model config: missing field {exc}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelDirectoryError(f"{path}: invalid model config: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": KIND,
            "name": self.name,
            "version": self.version,
            "policies": [{"id": p.id, "version": p.version, "threshold": p.threshold} for p in self.policies],
            "max_length": self.max_length,
            "window_stride": self.window_stride,
        }
        if self.encoder is not None:
            out["encoder"] = self.encoder.to_dict()
        if self.head_file is not None:
            out["head"] = self.head_file
        if self.onnx:
            out["onnx"] = {f.precision: {"file": f.file, "sha256": f.sha256} for f in self.onnx}
            out["tokenizer"] = self.tokenizer_file
        return out

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
