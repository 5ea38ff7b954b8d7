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

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.base import bert_onnx
from models.base.contract import Columns, Cost, Encoded, FloatArray, ModelInfo, Policy
from models.base.directory import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    ModelDirectoryError,
    checked_file,
    checked_onnx_file,
    choose_onnx,
    file_sha256,
    fingerprint,
    ort_errors,
)
from models.base.mlp_head import MlpHead
from models.base.onnx_cache import cache_key, load_or_build
from models.base.runner import WindowRunner
from models.base.session import Device, create_session, cuda_unusable_reason
from models.base.text import normalize_text
from models.guardformer.calibration import apply_shifts, shifts_for
from models.guardformer.config import GuardFormerConfig
from models.guardformer.instruction import EncodedPolicy, InstructionTokenizer
from models.policies import PolicySet

log = logging.getLogger(__name__)

SCORES = "scores"


class GuardFormerGuard:
    """A `GuardModel` over the enabled policies of a `PolicySet`."""

    def __init__(
        self,
        config: GuardFormerConfig,
        session: ort.InferenceSession,
        device: str,
        tokenizer: InstructionTokenizer,
        policies: PolicySet,
        source_fingerprint: str = "",
    ) -> None:
        enabled = policies.enabled()
        if not len(enabled):
            raise ModelDirectoryError("no enabled policy to score")
        self.config = config
        self._device = device
        self.tokenizer = tokenizer
        self.policies = enabled
        self._session = session
        self._source_fingerprint = source_fingerprint
        self._prefixes: list[EncodedPolicy] = [tokenizer.encode_policy(p) for p in enabled]
        self._prefix_lengths = [len(prefix.prefix) for prefix in self._prefixes]
        self.runner = WindowRunner(session, SCORES)
        self.runner.pad_id = tokenizer.pad_id
        policy_infos = tuple(Policy(p.id, p.version, p.threshold, p.fingerprint) for p in enabled)
        #: per policy, the calibration shift in logit space (0: scored raw)
        self.shifts = shifts_for(policy_infos, config.calibration)
        #: columns of scope policies: the model says "on topic", the violation is the opposite
        self.scope_columns = np.asarray([i for i, p in enumerate(enabled) if p.is_scope], dtype=np.int64)
        scored_by = fingerprint(
            source_fingerprint, config.max_length, config.max_policy_tokens, self.shifts.tolist()
        )
        self._info = ModelInfo(config.name, config.version, policy_infos, config.max_length, scored_by)

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
            scored_by = fingerprint(
                _source_fingerprint(model_dir, config, source), file_sha256(tokenizer_file)
            )
            session, actual = create_session(source, device, intra_op_threads)
            tokenizer = InstructionTokenizer(tokenizer_file, config.max_length, config.max_policy_tokens)
        except ModelDirectoryError:
            raise
        except (OSError, ValueError, bert_onnx.EncoderIntegrityError) as exc:
            raise ModelDirectoryError(f"{model_dir}: {exc}") from exc
        except ort_errors() as exc:
            raise ModelDirectoryError(f"{model_dir}: ONNX Runtime cannot open the model ({exc})") from exc
        log.info(
            "loaded %s %s (%s) from %s on %s, %d policies",
            config.name,
            config.version,
            chosen,
            model_dir,
            actual,
            len(policies.enabled()),
        )
        return cls(config, session, actual, tokenizer, policies, scored_by)

    def with_policies(self, policies: PolicySet) -> GuardFormerGuard:
        """The same loaded model (session, tokenizer) over other policies: no file is read again."""
        return GuardFormerGuard(
            self.config, self._session, self._device, self.tokenizer, policies, self._source_fingerprint
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> str:
        return self._device

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def encode(self, texts: Sequence[str], columns: Sequence[Columns] | None = None) -> list[Encoded]:
        """The prompts' windows (no policy yet), each asking for its `columns` (default all)."""
        encoded = self.tokenizer.encode_prompts(texts)
        if columns is None:
            return encoded
        return [dataclasses.replace(e, columns=c) for e, c in zip(encoded, columns, strict=True)]

    def cost(self, item: Encoded) -> Cost:
        """One row per window and asked policy, each the policy's prefix + the window + [SEP]."""
        asked = self._asked(item)
        if not asked or not item.windows:
            return Cost(0, 0)
        longest = max(len(w) for w in item.windows) + 1 + max(self._prefix_lengths[c] for c in asked)
        return Cost(len(item.windows) * len(asked), longest)

    def split(self, item: Encoded, max_tokens: int) -> list[Encoded]:
        """Per asked policy, runs of windows whose rows stay within `max_tokens` (one row at least)."""
        longest_window = max((len(w) for w in item.windows), default=0) + 1
        pieces = []
        for column in self._asked(item):
            per_piece = max(1, max_tokens // (longest_window + self._prefix_lengths[column]))
            pieces += [
                Encoded(item.windows[start : start + per_piece], columns=(column,))
                for start in range(0, len(item.windows), per_piece)
            ]
        return pieces

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        """[len(batch), n_policies]: per prompt and asked policy, the maximum over the prompt's windows,
        calibrated (`models.guardformer.calibration`) for the policies the model was measured on.
        A scope policy's score is one minus the model's match (a prompt that matches none of its
        windows is off topic), before calibration: calibration moves violation scores.

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
        scores = self.runner.run_rows(rows)[:, 0]
        counts = [len(batch[row].windows) for row, _ in pairs]
        offsets = np.cumsum([0, *counts[:-1]])
        where = np.asarray(pairs)
        out[where[:, 0], where[:, 1]] = np.maximum.reduceat(scores, offsets)
        if self.scope_columns.size:
            out[:, self.scope_columns] = 1.0 - out[:, self.scope_columns]
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
        target = "cuda" if device != "cpu" and cuda_unusable_reason() is None else "cpu"
        chosen = choose_onnx(config.onnx, target, precision, config.name)
        path = checked_onnx_file(model_dir, chosen)
        assert config.tokenizer_file is not None  # noqa: S101 (checked by the config)
        return path, checked_file(model_dir, config.tokenizer_file, "tokenizer"), chosen.precision
    assert config.encoder_path and config.encoder_sha256 and config.head_file  # noqa: S101 (config)
    encoder = model_dir / config.encoder_path
    head_path = checked_file(model_dir, config.head_file, "head file")
    head = MlpHead.load(head_path)
    sha = config.encoder_sha256
    key = cache_key(bert_onnx.BUILDER_VERSION, sha, file_sha256(head_path))
    source = load_or_build(key, lambda: bert_onnx.build_model(encoder, head, sha), cache_dir)
    return source, encoder / TOKENIZER_FILE, "fp32"


def _source_fingerprint(model_dir: Path, config: GuardFormerConfig, source: Path | bytes) -> str:
    """What the graph was built from, or the exported file's hash."""
    if config.onnx:
        assert isinstance(source, Path)  # noqa: S101 (an exported file is a path)
        return file_sha256(source)
    assert config.head_file is not None  # noqa: S101 (config)
    return fingerprint(
        bert_onnx.BUILDER_VERSION, config.encoder_sha256, file_sha256(model_dir / config.head_file)
    )
