"""The embedder guard: all-MiniLM-L6-v2 sentence embeddings and a small MLP head, one ONNX graph.

A model directory holds `config.json`, the head weights and `MODEL_CARD.md` (a trained
directory), or ready ONNX files and a tokenizer (an exported one). Loading checks the weights'
SHA-256, builds the ONNX graph (or takes it from the cache) or opens the exported file, and
opens an ONNX Runtime session on CUDA when it works, on CPU otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.base import bert_onnx
from models.base.contract import (
    Columns,
    Cost,
    Encoded,
    FloatArray,
    ModelInfo,
    split_windows_within,
    window_cost,
)
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
from models.base.windows import WindowTokenizer
from models.embedder.config import GuardConfig

log = logging.getLogger(__name__)

SCORES = "scores"


class EmbedderGuard:
    """A `GuardModel` scoring each policy with a sigmoid over the prompt's sentence embedding.

    A prompt longer than one window is scored per window; its score is the maximum over windows.
    Every policy is computed in one pass, whatever an item asks for.
    """

    def __init__(
        self,
        config: GuardConfig,
        session: ort.InferenceSession,
        device: str,
        tokenizer: WindowTokenizer,
        source_fingerprint: str = "",
    ) -> None:
        self.config = config
        self._device = device
        self.precision = "fp32"
        self.tokenizer = tokenizer
        self.runner = WindowRunner(session, SCORES)
        width = session.get_outputs()[[o.name for o in session.get_outputs()].index(SCORES)].shape[1]
        if width != len(config.policies):
            raise ModelDirectoryError(
                f"model scores {width} outputs but the config names {len(config.policies)} policies"
            )
        scored_by = fingerprint(source_fingerprint, config.max_length, config.window_stride)
        self._info = dataclasses.replace(config.info, fingerprint=scored_by)

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: Device = "auto",
        cache_dir: Path | None = None,
        intra_op_threads: int = 0,
        precision: str = "auto",
    ) -> EmbedderGuard:
        """Open the model in `model_dir`: an exported ONNX file when it has them (see
        `choose_onnx`), else the graph built from its encoder and head (cached in `cache_dir`).
        Raises `ModelDirectoryError` naming what is missing or wrong."""
        if not model_dir.is_dir():
            raise ModelDirectoryError(f"model directory not found: {model_dir}")
        config = GuardConfig.load(model_dir / CONFIG_FILE)
        try:
            source: Path | bytes
            if config.onnx:
                exported, tokenizer_file, chosen = _exported(model_dir, config, device, precision)
                source, scored_by = exported, fingerprint(file_sha256(exported), file_sha256(tokenizer_file))
            else:
                source, scored_by = _built(model_dir, config, cache_dir)
                tokenizer_file, chosen = encoder_dir_of(model_dir, config) / TOKENIZER_FILE, "fp32"
            session, actual = create_session(source, device, intra_op_threads)
        except (OSError, bert_onnx.EncoderIntegrityError) as exc:
            raise ModelDirectoryError(f"{model_dir}: {exc}") from exc
        except ort_errors() as exc:
            raise ModelDirectoryError(f"{model_dir}: ONNX Runtime cannot open the model ({exc})") from exc
        tokenizer = WindowTokenizer(tokenizer_file, config.max_length, config.window_stride)
        log.info("loaded %s %s (%s) from %s on %s", config.name, config.version, chosen, model_dir, actual)
        guard = cls(config, session, actual, tokenizer, scored_by)
        guard.precision = chosen
        return guard

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> str:
        return self._device

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def encode(self, texts: Sequence[str], columns: Sequence[Columns] | None = None) -> list[Encoded]:
        encoded = self.tokenizer.encode(list(texts))
        if columns is None:
            return encoded
        return [dataclasses.replace(e, columns=c) for e, c in zip(encoded, columns, strict=True)]

    def cost(self, item: Encoded) -> Cost:
        return window_cost(item)

    def split(self, item: Encoded, max_tokens: int) -> list[Encoded]:
        return split_windows_within(item, max_tokens)

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        """Probabilities [len(batch), n_policies]: per prompt, the maximum over its windows."""
        if not batch:
            return np.zeros((0, len(self.config.policies)), dtype=np.float32)
        for item in batch:
            if any(len(w) > self.config.max_length for w in item.windows):
                raise ValueError(f"a window is longer than max_length={self.config.max_length}")
        return self.runner.run_max(batch)


def encoder_dir_of(model_dir: Path, config: GuardConfig) -> Path:
    """The encoder directory a trained model directory names: inside it, or the packaged one."""
    if config.encoder is None:
        raise ModelDirectoryError(f"{model_dir}: config names no encoder")
    if config.encoder.path is not None:
        return model_dir / config.encoder.path
    return bert_onnx.encoder_dir(config.encoder.package or bert_onnx.ENCODER_PACKAGE)


def _built(model_dir: Path, config: GuardConfig, cache_dir: Path | None) -> tuple[Path | bytes, str]:
    """The encoder + head graph, built from the weights (and cached) after their hashes are checked,
    and the fingerprint of what it was built from."""
    ref, head_file = config.encoder, config.head_file
    assert ref is not None and head_file is not None  # noqa: S101 (validated by GuardConfig)
    encoder = encoder_dir_of(model_dir, config)
    bert_onnx.verify_encoder(encoder, ref.sha256)
    head_path = checked_file(model_dir, head_file, "head file")
    try:
        head = MlpHead.load(head_path)
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise ModelDirectoryError(f"{head_path}: not a readable head file ({exc})") from exc
    if head.n_outputs != len(config.policies):
        raise ModelDirectoryError(
            f"{head_path}: {head.n_outputs} outputs for {len(config.policies)} policies"
        )
    parts = (bert_onnx.BUILDER_VERSION, ref.sha256.lower(), file_sha256(head_path))
    source = load_or_build(
        cache_key(*parts), lambda: bert_onnx.build_model(encoder, head, ref.sha256), cache_dir
    )
    return source, fingerprint(*parts, file_sha256(encoder / TOKENIZER_FILE))


def _exported(model_dir: Path, config: GuardConfig, device: Device, precision: str) -> tuple[Path, Path, str]:
    """(ONNX file, tokenizer file, precision) of an exported directory, after checking the file's hash."""
    target = "cuda" if device != "cpu" and cuda_unusable_reason() is None else "cpu"
    chosen = choose_onnx(config.onnx, target, precision, config.name)
    path = checked_onnx_file(model_dir, chosen)
    assert config.tokenizer_file is not None  # noqa: S101 (validated by GuardConfig)
    tokenizer = checked_file(model_dir, config.tokenizer_file, "tokenizer")
    return path, tokenizer, chosen.precision
