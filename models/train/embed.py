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

from models.runtime import bert_onnx
from models.runtime.base import FloatArray, IdArray
from models.runtime.onnx_cache import cache_key, default_cache_dir, load_or_build
from models.runtime.runner import WindowRunner
from models.runtime.session import create_session
from models.runtime.windows import WindowTokenizer, pad_windows

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class WindowEmbeddings:
    """Row i of `vectors` embeds a window of text `doc[i]`; a text's windows are consecutive."""

    vectors: FloatArray
    doc: IntArray


def _embeddings_key(texts: list[str], max_length: int, stride: int, encoder_sha256: str) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return cache_key(
        "embeddings",
        bert_onnx.BUILDER_VERSION,
        encoder_sha256,
        str(max_length),
        str(stride),
        digest.hexdigest(),
    )


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


def embed_texts(
    texts: list[str],
    max_length: int,
    stride: int,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    threads: int = 0,
    encoder_dir: Path | None = None,
) -> WindowEmbeddings:
    """Window embeddings of `texts`, from the on-disk cache when they were computed before.

    `encoder_dir`: an encoder directory (see `models.train.torch_encoder`); default: the packaged
    all-MiniLM-L6-v2.
    """
    encoder = encoder_dir if encoder_dir is not None else bert_onnx.encoder_dir()
    encoder_sha256 = (
        bert_onnx.ENCODER_SHA256
        if encoder_dir is None
        else bert_onnx.file_sha256(encoder / bert_onnx.WEIGHTS_FILE)
    )
    directory = (cache_dir or default_cache_dir().parent) / "embeddings"
    path = directory / f"{_embeddings_key(texts, max_length, stride, encoder_sha256)}.npz"
    if path.is_file():
        with np.load(path) as cached:
            log.info("window embeddings from %s", path)
            return WindowEmbeddings(cached["vectors"], cached["doc"])
    tokenizer = WindowTokenizer(encoder / "tokenizer.json", max_length, stride)
    encoded = tokenizer.encode(texts)
    windows = [w for item in encoded for w in item.windows]
    doc = np.repeat(np.arange(len(texts)), [len(item.windows) for item in encoded]).astype(np.int64)
    vectors = _run_sorted(encoder_runner(cache_dir, threads, encoder, encoder_sha256), windows, batch_size)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as stream:
        np.savez(stream, vectors=vectors, doc=doc)
    temporary.replace(path)
    return WindowEmbeddings(vectors, doc)
