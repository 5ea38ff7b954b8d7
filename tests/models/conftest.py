"""Shared fixtures for the model tests: the encoder-only ONNX session and the shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.base import bert_onnx
from models.base.contract import GuardModel, Policy
from models.base.mlp_head import MlpHead
from models.base.onnx_cache import cache_key, load_or_build
from models.base.runner import WindowRunner
from models.base.session import create_session
from models.base.windows import WindowTokenizer
from models.embedder.config import EncoderRef, GuardConfig
from models.serving.loader import load_model

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = REPO_ROOT / "models" / "artifacts" / "embedder-minilm"


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def encoder_runner(onnx_cache_dir: Path) -> WindowRunner:
    """Runs windows through the encoder alone; rows are sentence embeddings."""
    encoder = bert_onnx.encoder_dir()
    source = load_or_build(
        cache_key("encoder-test", bert_onnx.BUILDER_VERSION),
        lambda: bert_onnx.build_model(encoder),
        onnx_cache_dir,
    )
    session, _ = create_session(source, "cpu", intra_op_threads=0)
    return WindowRunner(session, "embeddings")


@pytest.fixture(scope="session")
def tokenizer() -> WindowTokenizer:
    return WindowTokenizer(bert_onnx.encoder_dir() / "tokenizer.json", max_length=256, stride=192)


@pytest.fixture(scope="session")
def guard(onnx_cache_dir: Path) -> GuardModel:
    """The shipped default model, on CPU."""
    return load_model(ARTIFACT_DIR, device="cpu", cache_dir=onnx_cache_dir)


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained model directory: the packaged encoder and a random two-output MLP head."""
    out = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    head = MlpHead(
        (rng.normal(0, 0.3, (384, 16)).astype(np.float32), rng.normal(0, 0.5, (16, 2)).astype(np.float32)),
        (np.zeros(16, dtype=np.float32), np.zeros(2, dtype=np.float32)),
    )
    head.save(out / "head.safetensors")
    GuardConfig(
        name="tiny-head",
        version="0.1.0",
        policies=(Policy("unsafe_content", "1", 0.5), Policy("prompt_injection", "1", 0.5)),
        max_length=128,
        window_stride=96,
        encoder=EncoderRef(bert_onnx.ENCODER_PACKAGE, bert_onnx.ENCODER_SHA256),
    ).save(out / "config.json")
    return out
