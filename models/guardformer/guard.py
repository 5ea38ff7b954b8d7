"""GuardFormer served through ONNX Runtime: every prompt scored against every policy in force.

A GuardFormer model directory holds `config.json` (kind "guardformer", name, version, input
lengths, encoder path and SHA-256, head file) with `encoder/` and `head.safetensors` as
training writes them; the ONNX graph (encoder, mean pooling, head) is built from them at load
and cached, like the embedder guard's. The policies are not part of the model: they come from
the policy registry (`models.policies`), so a new policy written in plain words is scored with
no retraining. Each policy's words are tokenized once, at load.

Cost: a prompt costs one model row per policy (and per window of a long prompt), so the
scoring work grows linearly with the number of policies in force.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.base import bert_onnx
from models.base.contract import Encoded, FloatArray, ModelInfo, Policy
from models.base.mlp_head import MlpHead
from models.base.onnx_cache import cache_key, load_or_build
from models.base.runner import WindowRunner
from models.base.session import Device, create_session, cuda_unusable_reason
from models.base.text import normalize_text
from models.embedder.config import PREFERENCE, ModelDirectoryError, OnnxFile
from models.guardformer.calibration import apply_shifts, shifts_for
from models.guardformer.instruction import EncodedPolicy, InstructionTokenizer
from models.policies import PolicySet

log = logging.getLogger(__name__)

KIND = "guardformer"
CONFIG_FILE = "config.json"
SCORES = "scores"


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
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, path: Path) -> GuardFormerConfig:
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("kind") != KIND:
                raise ValueError(f"kind is {raw.get('kind')!r}, not {KIND!r}")
            config = cls._from_raw(raw)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelDirectoryError(f"{path}: not a GuardFormer config ({exc!r})") from exc
        return config

    @classmethod
    def _from_raw(cls, raw: dict[str, Any]) -> GuardFormerConfig:
        encoder = raw.get("encoder") or {}
        onnx = raw.get("onnx") or {}
        config = cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            max_length=int(raw["max_length"]),
            max_policy_tokens=int(raw["max_policy_tokens"]),
            encoder_path=_inside(str(encoder["path"])) if encoder else None,
            encoder_sha256=str(encoder["sha256"]) if encoder else None,
            head_file=_inside(str(raw["head"])) if raw.get("head") else None,
            onnx=tuple(OnnxFile(k, str(v["file"]), str(v["sha256"])) for k, v in onnx.items()),
            tokenizer_file=_inside(str(raw["tokenizer"])) if raw.get("tokenizer") else None,
            raw=raw,
        )
        if not config.onnx and (config.encoder_path is None or config.head_file is None):
            raise ValueError("needs either onnx files and a tokenizer, or an encoder and a head")
        if config.onnx and config.tokenizer_file is None:
            raise ValueError("onnx files need a tokenizer file")
        return config


def _inside(name: str) -> str:
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{name!r} must be a relative path inside the model directory")
    return name


class GuardFormerGuard:
    """A `GuardModel` over the enabled policies of a `PolicySet`."""

    def __init__(
        self,
        config: GuardFormerConfig,
        session: ort.InferenceSession,
        device: str,
        tokenizer: InstructionTokenizer,
        policies: PolicySet,
        max_tokens_per_run: int = 16384,
    ) -> None:
        enabled = policies.enabled()
        if not len(enabled):
            raise ModelDirectoryError("no enabled policy to score")
        self.config = config
        self._device = device
        self.tokenizer = tokenizer
        self.policies = enabled
        self._prefixes: list[EncodedPolicy] = [tokenizer.encode_policy(p) for p in enabled]
        self.runner = WindowRunner(session, SCORES, max_tokens_per_run)
        self.runner.pad_id = tokenizer.pad_id
        self._info = ModelInfo(
            config.name,
            config.version,
            tuple(Policy(p.id, p.version, p.threshold, p.fingerprint) for p in enabled),
            config.max_length,
        )
        #: per policy, the calibration shift in logit space (0: scored raw)
        self.shifts = shifts_for(self._info.policies, config.raw.get("calibration") or {})

    @classmethod
    def load(
        cls,
        model_dir: Path,
        policies: PolicySet,
        device: Device = "auto",
        cache_dir: Path | None = None,
        intra_op_threads: int = 0,
        precision: str = "auto",
    ) -> GuardFormerGuard:
        config = GuardFormerConfig.load(model_dir / CONFIG_FILE)
        try:
            source, tokenizer_file, chosen = _model_source(model_dir, config, device, precision, cache_dir)
            session, actual = create_session(source, device, intra_op_threads)
            tokenizer = InstructionTokenizer(tokenizer_file, config.max_length, config.max_policy_tokens)
        except (OSError, ValueError, bert_onnx.EncoderIntegrityError) as exc:
            raise ModelDirectoryError(f"{model_dir}: {exc}") from exc
        log.info(
            "loaded %s %s (%s) from %s on %s, %d policies",
            config.name,
            config.version,
            chosen,
            model_dir,
            actual,
            len(policies.enabled()),
        )
        return cls(config, session, actual, tokenizer, policies)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> str:
        return self._device

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def encode(self, texts: list[str]) -> list[Encoded]:
        """The prompts' windows (no policy yet): what the batcher budgets, times the policies."""
        return self.tokenizer.encode_prompts(texts)

    def score(self, batch: list[Encoded]) -> FloatArray:
        """[len(batch), n_policies]: per prompt and asked policy, the maximum over the prompt's windows,
        calibrated (`models.guardformer.calibration`) for the policies the model was measured on.

        Only the (prompt, policy) pairs an item asks for (`Encoded.columns`, default all) are
        run; the others stay NaN.
        """
        n_policies = len(self._prefixes)
        out = np.full((len(batch), n_policies), np.nan, dtype=np.float32)
        pairs = [(row, column) for row, item in enumerate(batch) for column in self._asked(item)]
        if not pairs:
            return out
        rows = [
            self.tokenizer.pair(self._prefixes[column], window)
            for row, column in pairs
            for window in batch[row].windows
        ]
        scores = self.runner.run_windows(rows)[:, 0]
        counts = [len(batch[row].windows) for row, _ in pairs]
        offsets = np.cumsum([0, *counts[:-1]])
        where = np.asarray(pairs)
        out[where[:, 0], where[:, 1]] = np.maximum.reduceat(scores, offsets)
        return apply_shifts(out, self.shifts)

    def _asked(self, item: Encoded) -> Sequence[int]:
        if item.columns is None:
            return range(len(self._prefixes))
        if any(not 0 <= column < len(self._prefixes) for column in item.columns):
            raise ValueError(f"policy columns {item.columns} outside 0..{len(self._prefixes) - 1}")
        return item.columns


def _model_source(
    model_dir: Path, config: GuardFormerConfig, device: Device, precision: str, cache_dir: Path | None
) -> tuple[Path | bytes, Path, str]:
    """(ONNX file or bytes, tokenizer file, precision): an exported file, or the graph built from weights."""
    if config.onnx:
        chosen = _choose(config, device, precision)
        path = model_dir / chosen.file
        if bert_onnx.file_sha256(path) != chosen.sha256.lower():
            raise ValueError(
                f"{path}: SHA-256 differs from the config's: the file is damaged or was replaced"
            )
        assert config.tokenizer_file is not None  # noqa: S101 (checked by the config)
        return path, model_dir / config.tokenizer_file, chosen.precision
    assert config.encoder_path and config.encoder_sha256 and config.head_file  # noqa: S101 (config)
    encoder, head_path = model_dir / config.encoder_path, model_dir / config.head_file
    head = MlpHead.load(head_path)
    sha = config.encoder_sha256
    key = cache_key(bert_onnx.BUILDER_VERSION, sha, bert_onnx.file_sha256(head_path))
    source = load_or_build(key, lambda: bert_onnx.build_model(encoder, head, sha), cache_dir)
    return source, encoder / "tokenizer.json", "fp32"


def _choose(config: GuardFormerConfig, device: Device, precision: str) -> OnnxFile:
    by_precision = {f.precision: f for f in config.onnx}
    if precision != "auto":
        if precision not in by_precision:
            raise ValueError(f"no {precision} ONNX file (the directory has {', '.join(by_precision)})")
        return by_precision[precision]
    target = "cuda" if device != "cpu" and cuda_unusable_reason() is None else "cpu"
    for candidate in PREFERENCE[target]:
        if candidate in by_precision:
            return by_precision[candidate]
    raise ValueError("only int8 ONNX files, whose scores depend on the batch: ask for int8 explicitly")
