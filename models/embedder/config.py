"""The `config.json` of an embedder guard model directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.runtime.base import ModelInfo, Policy

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
    encoder: EncoderRef
    head_file: str = "head.safetensors"

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
        if not self.head_file or Path(self.head_file).name != self.head_file:
            raise ValueError(f"head must be a file name inside the model directory, got {self.head_file!r}")

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.version, self.policies, self.max_length)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GuardConfig:
        if raw.get("kind", KIND) != KIND:
            raise ValueError(f"not an embedder guard config (kind={raw.get('kind')!r})")
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            policies=tuple(
                Policy(str(p["id"]), str(p["version"]), float(p["threshold"])) for p in raw["policies"]
            ),
            max_length=int(raw["max_length"]),
            window_stride=int(raw["window_stride"]),
            encoder=EncoderRef(
                raw["encoder"].get("package"), str(raw["encoder"]["sha256"]), raw["encoder"].get("path")
            ),
            head_file=str(raw.get("head", "head.safetensors")),
        )

    @classmethod
    def load(cls, path: Path) -> GuardConfig:
        """Read and validate a `config.json`."""
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid model config: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "name": self.name,
            "version": self.version,
            "policies": [{"id": p.id, "version": p.version, "threshold": p.threshold} for p in self.policies],
            "max_length": self.max_length,
            "window_stride": self.window_stride,
            "encoder": self.encoder.to_dict(),
            "head": self.head_file,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
