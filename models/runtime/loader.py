"""Opens a guard model directory as a `GuardModel`."""

from __future__ import annotations

import json
from pathlib import Path

from models.embedder.guard import EmbedderGuard
from models.runtime.base import GuardModel
from models.runtime.session import Device


def load_model(
    path: str | Path,
    device: Device = "auto",
    cache_dir: str | Path | None = None,
    intra_op_threads: int = 0,
) -> GuardModel:
    """The guard model in directory `path` (its `config.json` says which kind it is).

    `device`: "auto" and "cuda" use CUDA when it works, else the CPU; "cpu" forces the CPU.
    `cache_dir`: where built ONNX graphs are kept (default `~/.cache/guardstream/onnx`).
    `intra_op_threads`: ONNX Runtime threads per call (0: one per physical core).
    """
    model_dir = Path(path)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no model config at {config_file}")
    kind = json.loads(config_file.read_text(encoding="utf-8")).get("kind", "embedder")
    if kind != "embedder":
        raise ValueError(f"{config_file}: unknown model kind {kind!r}")
    cache = Path(cache_dir) if cache_dir is not None else None
    return EmbedderGuard.load(model_dir, device=device, cache_dir=cache, intra_op_threads=intra_op_threads)
