"""On-disk cache of built ONNX models, keyed by what they were built from."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/guardstream/onnx`, or `~/.cache/guardstream/onnx`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "guardstream" / "onnx"


def cache_key(*parts: str) -> str:
    """SHA-256 over the parts (encoder hash, head hash, builder version...)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename it into place."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # readable by other users sharing the cache, like any build output
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_or_build(
    key: str, build: Callable[[], onnx.ModelProto], cache_dir: Path | None = None
) -> Path | bytes:
    """The cached model file for `key`, building and caching it first when it is missing.

    When the cache directory cannot be written, the built model is returned as bytes instead.
    """
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    path = directory / f"{key}.onnx"
    if path.is_file():
        return path
    data: bytes = build().SerializeToString()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, data)
    except OSError as exc:
        log.warning("cannot cache the ONNX model in %s (%s); keeping it in memory", directory, exc)
        return data
    log.info("built ONNX model %s", path)
    return path
