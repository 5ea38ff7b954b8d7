"""The `config.json` of an embedder guard model directory (shared parts: `models.base.directory`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base.contract import ModelInfo, Policy
from models.base.directory import (
    ModelDirectoryError,
    OnnxFile,
    inside,
    onnx_files_from,
    onnx_files_to,
    read_config,
    write_config,
)

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
            inside(self.tokenizer_file, "tokenizer")
        elif self.encoder is None or self.head_file is None:
            raise ValueError("a model needs either onnx files and a tokenizer, or an encoder and a head")
        if self.head_file is not None:
            inside(self.head_file, "head")
        if self.encoder is not None and self.encoder.path is not None:
            inside(self.encoder.path, "encoder path")
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
            onnx=onnx_files_from(raw.get("onnx")),
            tokenizer_file=str(raw["tokenizer"]) if raw.get("tokenizer") is not None else None,
        )

    @classmethod
    def load(cls, path: Path) -> GuardConfig:
        """Read and validate a `config.json`; `ModelDirectoryError` says what is wrong."""
        raw = read_config(path)
        try:
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
            out["onnx"] = onnx_files_to(self.onnx)
            out["tokenizer"] = self.tokenizer_file
        return out

    def save(self, path: Path) -> None:
        write_config(path, self.to_dict())
