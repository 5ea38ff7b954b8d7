"""The `config.json` of a GuardFormer model directory: the one class that reads and writes it.

    kind               "guardformer"
    name, version      what verdicts report
    max_length         ids of one (policy, prompt window) row, special tokens included
    max_policy_tokens  ids of the policy's words at most
    encoder, head      a trained directory: {"path", "sha256"} of its encoder, the head file
    onnx, tokenizer    an exported one: precision -> {"file", "sha256"}, the tokenizer file
    calibration        per policy id: {"fingerprint", "best_threshold", "policy_threshold", "shift"},
                       and "*": the shift for unseen policies (`models.guardformer.calibration`)
    trained_policies   [{"id", "version", "fingerprint"}]: the policies it was trained on
    merge              how a merged model was made (`guardstream merge`)

Training, calibration, export and merging all write through `GuardFormerConfig.save`; other
fields they add are kept as they are (`extra`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.base.directory import (
    ModelDirectoryError,
    OnnxFile,
    inside,
    onnx_files_from,
    onnx_files_to,
    read_config,
    write_config,
)

KIND = "guardformer"
ENCODER_SUBDIR = "encoder"
HEAD_FILE = "head.safetensors"
_OWN_FIELDS = (
    "kind",
    "name",
    "version",
    "max_length",
    "max_policy_tokens",
    "encoder",
    "head",
    "onnx",
    "tokenizer",
    "calibration",
    "trained_policies",
    "merge",
)


@dataclass(frozen=True)
class GuardFormerConfig:
    """A trained directory names `encoder` + `head`; an exported one `onnx` files + `tokenizer`."""

    name: str
    version: str
    max_length: int
    max_policy_tokens: int
    encoder_path: str | None = None
    encoder_sha256: str | None = None
    head_file: str | None = None
    onnx: tuple[OnnxFile, ...] = ()
    tokenizer_file: str | None = None
    calibration: Mapping[str, Any] = field(default_factory=dict)
    trained_policies: tuple[Mapping[str, Any], ...] = ()
    merge: Mapping[str, Any] | None = None
    #: fields this class does not know, written back as they were
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.onnx and (self.encoder_path is None or self.head_file is None):
            raise ValueError("needs either onnx files and a tokenizer, or an encoder and a head")
        if self.onnx and self.tokenizer_file is None:
            raise ValueError("onnx files need a tokenizer file")
        for name, what in (
            (self.encoder_path, "encoder path"),
            (self.head_file, "head"),
            (self.tokenizer_file, "tokenizer"),
        ):
            if name is not None:
                inside(name, what)

    @classmethod
    def load(cls, path: Path) -> GuardFormerConfig:
        """Read and check a `config.json`; `ModelDirectoryError` says what is wrong."""
        raw = read_config(path)
        try:
            if raw.get("kind") != KIND:
                raise ValueError(f"kind is {raw.get('kind')!r}, not {KIND!r}")
            return cls.from_dict(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelDirectoryError(f"{path}: not a GuardFormer config ({exc!r})") from exc

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GuardFormerConfig:
        encoder = raw.get("encoder") or {}
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            max_length=int(raw["max_length"]),
            max_policy_tokens=int(raw["max_policy_tokens"]),
            encoder_path=str(encoder["path"]) if encoder else None,
            encoder_sha256=str(encoder["sha256"]) if encoder else None,
            head_file=str(raw["head"]) if raw.get("head") else None,
            onnx=onnx_files_from(raw.get("onnx")),
            tokenizer_file=str(raw["tokenizer"]) if raw.get("tokenizer") else None,
            calibration=dict(raw.get("calibration") or {}),
            trained_policies=tuple(raw.get("trained_policies") or ()),
            merge=raw.get("merge"),
            extra={k: v for k, v in raw.items() if k not in _OWN_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": KIND,
            "name": self.name,
            "version": self.version,
            "max_length": self.max_length,
            "max_policy_tokens": self.max_policy_tokens,
        }
        if self.encoder_path is not None:
            out["encoder"] = {"path": self.encoder_path, "sha256": self.encoder_sha256}
        if self.head_file is not None:
            out["head"] = self.head_file
        if self.onnx:
            out["onnx"] = onnx_files_to(self.onnx)
            out["tokenizer"] = self.tokenizer_file
        if self.trained_policies:
            out["trained_policies"] = [dict(p) for p in self.trained_policies]
        if self.merge is not None:
            out["merge"] = dict(self.merge)
        if self.calibration:
            out["calibration"] = dict(self.calibration)
        return {**out, **self.extra}

    def save(self, path: Path) -> None:
        write_config(path, self.to_dict())

    def with_calibration(self, entries: Mapping[str, Any]) -> GuardFormerConfig:
        return dataclasses.replace(self, calibration=dict(entries))

    def exported(self, files: tuple[OnnxFile, ...], tokenizer_file: str) -> GuardFormerConfig:
        """The config of the exported directory: ONNX files and a tokenizer instead of the weights."""
        return dataclasses.replace(
            self,
            encoder_path=None,
            encoder_sha256=None,
            head_file=None,
            onnx=files,
            tokenizer_file=tokenizer_file,
        )
