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

from models.embedder.config import GuardConfig
from models.runtime import bert_onnx
from models.runtime.base import Encoded, FloatArray, ModelInfo
from models.runtime.mlp_head import MlpHead
from models.runtime.onnx_cache import cache_key, load_or_build
from models.runtime.runner import WindowRunner
from models.runtime.session import Device, create_session
from models.runtime.windows import WindowTokenizer
from models.text import normalize_text

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
        self.tokenizer = tokenizer
        self.runner = WindowRunner(session, SCORES, max_tokens_per_run)
        width = session.get_outputs()[[o.name for o in session.get_outputs()].index(SCORES)].shape[1]
        if width != len(config.policies):
            raise ValueError(
                f"model scores {width} outputs but the config names {len(config.policies)} policies"
            )

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: Device = "auto",
        cache_dir: Path | None = None,
        intra_op_threads: int = 0,
    ) -> EmbedderGuard:
        """Open the model in `model_dir`, building its ONNX graph into `cache_dir` if needed."""
        config = GuardConfig.load(model_dir / CONFIG_FILE)
        encoder = (
            model_dir / config.encoder.path
            if config.encoder.path is not None
            else bert_onnx.encoder_dir(config.encoder.package or bert_onnx.ENCODER_PACKAGE)
        )
        bert_onnx.verify_encoder(encoder, config.encoder.sha256)
        head_path = model_dir / config.head_file
        head = MlpHead.load(head_path)
        if head.n_outputs != len(config.policies):
            raise ValueError(f"{head_path}: {head.n_outputs} outputs for {len(config.policies)} policies")
        key = cache_key(
            bert_onnx.BUILDER_VERSION, config.encoder.sha256.lower(), bert_onnx.file_sha256(head_path)
        )
        source = load_or_build(
            key, lambda: bert_onnx.build_model(encoder, head, config.encoder.sha256), cache_dir
        )
        session, actual = create_session(source, device, intra_op_threads)
        tokenizer = WindowTokenizer(encoder / "tokenizer.json", config.max_length, config.window_stride)
        log.info("loaded %s %s from %s on %s", config.name, config.version, model_dir, actual)
        return cls(config, session, actual, tokenizer)

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
