"""The embedder guard: all-MiniLM-L6-v2 sentence embeddings and a small MLP head, one ONNX graph.

A model directory holds `config.json`, the head weights and `MODEL_CARD.md`. Loading checks the
encoder weights' SHA-256, builds the ONNX graph (or takes it from the cache) and opens an ONNX
Runtime session on CUDA when it works, on CPU otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.base import bert_onnx
from models.base.contract import Encoded, FloatArray, ModelInfo
from models.base.mlp_head import MlpHead
from models.base.onnx_cache import cache_key, load_or_build
from models.base.runner import WindowRunner
from models.base.session import Device, create_session, cuda_unusable_reason
from models.base.text import normalize_text
from models.base.windows import WindowTokenizer
from models.embedder.config import PREFERENCE, GuardConfig, ModelDirectoryError, OnnxFile

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SCORES = "scores"


class EmbedderGuard:
    """A `GuardModel` scoring each policy with a sigmoid over the prompt's sentence embedding.

    A prompt longer than one window is scored per window; its score is the maximum over windows.
    """

    def __init__(
        self,
        config: GuardConfig,
        session: ort.InferenceSession,
        device: str,
        tokenizer: WindowTokenizer,
        max_tokens_per_run: int = 16384,
    ) -> None:
        self.config = config
        self._device = device
        self.precision = "fp32"
        self.tokenizer = tokenizer
        self.runner = WindowRunner(session, SCORES, max_tokens_per_run)
        width = session.get_outputs()[[o.name for o in session.get_outputs()].index(SCORES)].shape[1]
        if width != len(config.policies):
            raise ModelDirectoryError(
                f"model scores {width} outputs but the config names {len(config.policies)} policies"
            )

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
            tokenizer_file: Path | None = None
            chosen = "fp32"
            if config.onnx:
                source, tokenizer_file, chosen = _exported(model_dir, config, device, precision)
            else:
                source = _built(model_dir, config, cache_dir)
            session, actual = create_session(source, device, intra_op_threads)
        except (OSError, bert_onnx.EncoderIntegrityError) as exc:
            raise ModelDirectoryError(f"{model_dir}: {exc}") from exc
        except ort_errors() as exc:
            raise ModelDirectoryError(f"{model_dir}: ONNX Runtime cannot open the model ({exc})") from exc
        tokenizer = WindowTokenizer(
            tokenizer_file or encoder_dir_of(model_dir, config) / "tokenizer.json",
            config.max_length,
            config.window_stride,
        )
        log.info("loaded %s %s (%s) from %s on %s", config.name, config.version, chosen, model_dir, actual)
        guard = cls(config, session, actual, tokenizer)
        guard.precision = chosen
        return guard

    @property
    def info(self) -> ModelInfo:
        return self.config.info

    @property
    def device(self) -> str:
        return self._device

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def encode(self, texts: list[str]) -> list[Encoded]:
        return self.tokenizer.encode(texts)

    def score(self, batch: list[Encoded]) -> FloatArray:
        """Probabilities [len(batch), n_policies]: per prompt, the maximum over its windows."""
        if not batch:
            return np.zeros((0, len(self.config.policies)), dtype=np.float32)
        for item in batch:
            if any(len(w) > self.config.max_length for w in item.windows):
                raise ValueError(f"a window is longer than max_length={self.config.max_length}")
        return self.runner.run_max(batch)


def ort_errors() -> tuple[type[Exception], ...]:
    """The exception types ONNX Runtime raises for a model file it cannot load."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

    return (Fail, InvalidGraph, InvalidProtobuf)


def encoder_dir_of(model_dir: Path, config: GuardConfig) -> Path:
    """The encoder directory a trained model directory names: inside it, or the packaged one."""
    if config.encoder is None:
        raise ModelDirectoryError(f"{model_dir}: config names no encoder")
    if config.encoder.path is not None:
        return model_dir / config.encoder.path
    return bert_onnx.encoder_dir(config.encoder.package or bert_onnx.ENCODER_PACKAGE)


def _built(model_dir: Path, config: GuardConfig, cache_dir: Path | None) -> Path | bytes:
    """The encoder + head graph, built from the weights (and cached) after their hashes are checked."""
    ref, head_file = config.encoder, config.head_file
    assert ref is not None and head_file is not None  # noqa: S101 (validated by GuardConfig)
    encoder = encoder_dir_of(model_dir, config)
    bert_onnx.verify_encoder(encoder, ref.sha256)
    head_path = model_dir / head_file
    if not head_path.is_file():
        raise ModelDirectoryError(f"{model_dir}: head file {head_file} not found")
    try:
        head = MlpHead.load(head_path)
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise ModelDirectoryError(f"{head_path}: not a readable head file ({exc})") from exc
    if head.n_outputs != len(config.policies):
        raise ModelDirectoryError(
            f"{head_path}: {head.n_outputs} outputs for {len(config.policies)} policies"
        )
    key = cache_key(bert_onnx.BUILDER_VERSION, ref.sha256.lower(), bert_onnx.file_sha256(head_path))
    return load_or_build(key, lambda: bert_onnx.build_model(encoder, head, ref.sha256), cache_dir)


def choose_onnx(config: GuardConfig, device: str, precision: str) -> OnnxFile:
    """The exported file to run: `precision` if given, else the best the directory has for the
    device (CUDA: fp16, then fp32; CPU: fp32, then fp16; int8 only when asked for, see PREFERENCE)."""
    if precision != "auto":
        chosen = config.onnx_file(precision)
        if chosen is None:
            have = ", ".join(f.precision for f in config.onnx)
            raise ModelDirectoryError(f"{config.name}: no {precision} ONNX file (the directory has {have})")
        return chosen
    for candidate in PREFERENCE["cuda" if device == "cuda" else "cpu"]:
        found = config.onnx_file(candidate)
        if found is not None:
            return found
    raise ModelDirectoryError(
        f"{config.name}: only int8 ONNX files, whose scores depend on the batch: "
        "set the precision to int8 explicitly to use them"
    )


def _exported(model_dir: Path, config: GuardConfig, device: Device, precision: str) -> tuple[Path, Path, str]:
    """(ONNX file, tokenizer file, precision) of an exported directory, after checking the file's hash."""
    target = "cuda" if device != "cpu" and cuda_unusable_reason() is None else "cpu"
    chosen = choose_onnx(config, target, precision)
    path = model_dir / chosen.file
    if not path.is_file():
        raise ModelDirectoryError(f"{model_dir}: ONNX file {chosen.file} not found")
    actual = bert_onnx.file_sha256(path)
    if actual != chosen.sha256.lower():
        raise ModelDirectoryError(
            f"{path}: SHA-256 {actual} differs from the config's {chosen.sha256}: "
            "the file is damaged or was replaced"
        )
    assert config.tokenizer_file is not None  # noqa: S101 (validated by GuardConfig)
    tokenizer = model_dir / config.tokenizer_file
    if not tokenizer.is_file():
        raise ModelDirectoryError(f"{model_dir}: tokenizer {config.tokenizer_file} not found")
    return path, tokenizer, chosen.precision
