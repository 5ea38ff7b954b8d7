"""Sentence embeddings of every window of every training text, from the ONNX encoder.

Windows are cut exactly as the served model cuts them, sorted by length so a batch carries little
padding, and cached on disk (keyed by encoder, windowing and texts) so reruns are fast.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from models.base import bert_onnx
from models.base.contract import FloatArray, IdArray
from models.base.onnx_cache import cache_key, default_cache_dir, load_or_build
from models.base.runner import WindowRunner
from models.base.session import create_session
from models.base.windows import WindowTokenizer, pad_windows

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class WindowEmbeddings:
    """Row i of `vectors` embeds a window of text `doc[i]`; a text's windows are consecutive."""

    vectors: FloatArray
    doc: IntArray


def _store_path(directory: Path, max_length: int, stride: int, encoder_sha256: str) -> Path:
    """One store per encoder and windowing; it grows as new texts are embedded."""
    key = cache_key(
        "window-embeddings", bert_onnx.BUILDER_VERSION, encoder_sha256, str(max_length), str(stride)
    )
    return directory / f"{key}.npz"


def text_key(text: str) -> bytes:
    """The store's key of a text: its SHA-256 (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass
class _Store:
    """Window embeddings of every text embedded so far: text key -> its rows of `vectors`."""

    keys: list[bytes]
    vectors: FloatArray
    counts: IntArray

    @classmethod
    def load(cls, path: Path, width: int) -> _Store:
        if not path.is_file():
            return cls([], np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=np.int64))
        with np.load(path) as stored:
            keys = [bytes(k) for k in stored["keys"]]
            return cls(keys, stored["vectors"], stored["counts"])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as stream:
            keys = np.array(self.keys, dtype="S32")
            np.savez(stream, keys=keys, vectors=self.vectors, counts=self.counts)
        temporary.replace(path)

    def rows_of(self) -> dict[bytes, tuple[int, int]]:
        ends = np.cumsum(self.counts)
        return {k: (int(e - c), int(e)) for k, e, c in zip(self.keys, ends, self.counts, strict=True)}

    def add(self, keys: list[bytes], vectors: FloatArray, counts: IntArray) -> None:
        self.keys += keys
        self.vectors = np.concatenate([self.vectors, vectors]) if len(self.vectors) else vectors
        self.counts = np.concatenate([self.counts, counts])


def encoder_runner(cache_dir: Path | None, threads: int, encoder: Path, encoder_sha256: str) -> WindowRunner:
    """The encoder in directory `encoder` alone (output `embeddings`) in a CPU or CUDA session."""
    key = cache_key("encoder", bert_onnx.BUILDER_VERSION, encoder_sha256)
    source = load_or_build(key, lambda: bert_onnx.build_model(encoder, None, encoder_sha256), cache_dir)
    session, device = create_session(source, "auto", threads)
    log.info("encoder runs on %s", device)
    return WindowRunner(session, "embeddings")


def _run_sorted(runner: WindowRunner, windows: list[IdArray], batch_size: int) -> FloatArray:
    """Embeddings in the order of `windows`, computed in length-sorted batches with a progress bar."""
    order = np.argsort([len(w) for w in windows], kind="stable")
    rows: list[FloatArray] = []
    with tqdm(total=len(windows), desc="embedding windows", unit="win") as progress:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows.append(runner.run_padded(*pad_windows([windows[i] for i in chunk])))
            progress.update(len(chunk))
    out = np.empty((len(windows), rows[0].shape[1]), dtype=np.float32)
    out[order] = np.concatenate(rows)
    return out


def _embed_new(
    texts: list[str], tokenizer: WindowTokenizer, runner: WindowRunner, batch_size: int
) -> tuple[FloatArray, IntArray]:
    """(window vectors, windows per text) of texts not embedded before."""
    encoded = tokenizer.encode(texts)
    windows = [w for item in encoded for w in item.windows]
    return _run_sorted(runner, windows, batch_size), np.array(
        [len(e.windows) for e in encoded], dtype=np.int64
    )


def embed_texts(
    texts: list[str],
    max_length: int,
    stride: int,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    threads: int = 0,
    encoder_dir: Path | None = None,
) -> WindowEmbeddings:
    """Window embeddings of `texts`; texts embedded before (same encoder and windows) come from disk.

    `encoder_dir`: an encoder directory (see `models.train.torch_encoder`); default: the packaged
    all-MiniLM-L6-v2.
    """
    encoder = encoder_dir if encoder_dir is not None else bert_onnx.encoder_dir()
    encoder_sha256 = (
        bert_onnx.ENCODER_SHA256
        if encoder_dir is None
        else bert_onnx.file_sha256(encoder / bert_onnx.WEIGHTS_FILE)
    )
    path = _store_path(
        (cache_dir or default_cache_dir().parent) / "embeddings", max_length, stride, encoder_sha256
    )
    store = _Store.load(path, 0)
    keys = [text_key(t) for t in texts]
    known = store.rows_of()
    missing = list(dict.fromkeys(k for k in keys if k not in known))
    log.info("%d of %d texts embedded before (%s)", len(texts) - len(missing), len(texts), path.name)
    if missing:
        by_key = {k: t for k, t in zip(keys, texts, strict=True)}
        tokenizer = WindowTokenizer(encoder / "tokenizer.json", max_length, stride)
        runner = encoder_runner(cache_dir, threads, encoder, encoder_sha256)
        vectors, counts = _embed_new([by_key[k] for k in missing], tokenizer, runner, batch_size)
        store.add(missing, vectors, counts)
        store.save(path)
        known = store.rows_of()
    spans = [known[k] for k in keys]
    rows = np.concatenate([np.arange(a, b) for a, b in spans]) if spans else np.zeros(0, dtype=np.int64)
    doc = np.repeat(np.arange(len(texts)), [b - a for a, b in spans]).astype(np.int64)
    return WindowEmbeddings(store.vectors[rows], doc)
