"""The ONNX encoder reproduces the sentence-transformers embeddings, with and without padding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.base import bert_onnx
from models.base.contract import Cost, Encoded
from models.base.packing import plan_calls
from models.base.runner import WindowRunner
from models.base.windows import WindowTokenizer

GOLDEN = json.loads((Path(__file__).parent / "golden_minilm_embeddings.json").read_text(encoding="utf-8"))
TEXTS = [item["text"] for item in GOLDEN["items"]]
EXPECTED = np.array([item["embedding"] for item in GOLDEN["items"]], dtype=np.float32)


def first_windows(tokenizer: WindowTokenizer, texts: list[str]) -> list[np.ndarray]:
    """What the reference sees: each text truncated to its first window."""
    return [encoded.windows[0] for encoded in tokenizer.encode(texts)]


def test_golden_embeddings_batched(encoder_runner: WindowRunner, tokenizer: WindowTokenizer) -> None:
    assert GOLDEN["max_seq_length"] == tokenizer.max_length
    got = encoder_runner.run_windows(first_windows(tokenizer, TEXTS))
    assert np.abs(got - EXPECTED).max() < 1e-4
    cosine = (got * EXPECTED).sum(axis=1) / np.linalg.norm(EXPECTED, axis=1)
    assert cosine.min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batched_equals_one_at_a_time(encoder_runner: WindowRunner, tokenizer: WindowTokenizer) -> None:
    windows = first_windows(tokenizer, TEXTS)
    batched = encoder_runner.run_windows(windows)
    single = np.concatenate([encoder_runner.run_windows([w]) for w in windows])
    assert np.abs(batched - single).max() < 1e-5


def test_padding_does_not_change_embeddings(encoder_runner: WindowRunner, tokenizer: WindowTokenizer) -> None:
    (window,) = first_windows(tokenizer, ["What is the capital of France?"])
    ids = np.zeros((2, len(window) + 40), dtype=np.int64)
    mask = np.zeros_like(ids)
    ids[0, : len(window)] = window
    mask[0, : len(window)] = 1
    ids[1, :] = 2000
    mask[1, :] = 1
    padded = encoder_runner.run_padded(ids, mask)[0]
    alone = encoder_runner.run_windows([window])[0]
    assert np.abs(padded - alone).max() < 1e-5


def test_run_max_takes_the_maximum_over_windows(
    encoder_runner: WindowRunner, tokenizer: WindowTokenizer
) -> None:
    windows = first_windows(tokenizer, TEXTS[:3])
    rows = encoder_runner.run_windows(windows)
    combined = encoder_runner.run_max([Encoded(tuple(windows)), Encoded((windows[0],))])
    np.testing.assert_allclose(combined[0], rows.max(axis=0), atol=1e-6)
    np.testing.assert_allclose(combined[1], rows[0], atol=1e-6)


def test_wrong_encoder_hash_is_refused(tmp_path: Path) -> None:
    (tmp_path / bert_onnx.WEIGHTS_FILE).write_bytes(b"not the weights")
    with pytest.raises(bert_onnx.EncoderIntegrityError, match="SHA-256"):
        bert_onnx.verify_encoder(tmp_path)


def test_missing_encoder_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(bert_onnx.EncoderIntegrityError, match="not found"):
        bert_onnx.build_model(tmp_path)


def test_packing_does_not_change_embeddings(encoder_runner: WindowRunner, tokenizer: WindowTokenizer) -> None:
    windows = first_windows(tokenizer, TEXTS)
    lengths = [len(w) for w in windows]
    calls = plan_calls([Cost(1, n) for n in lengths], max_tokens=300, max_items=64, max_padding_ratio=1.0)
    assert len(calls) > 2
    assert sorted(i for call in calls for i in call) == list(range(len(windows)))
    assert all(len(call) * max(lengths[i] for i in call) <= 300 for call in calls if len(call) > 1)
    np.testing.assert_allclose(
        encoder_runner.run_windows(windows, max_tokens=300), encoder_runner.run_windows(windows), atol=1e-5
    )
