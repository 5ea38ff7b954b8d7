"""Opens a guard model directory as a `GuardModel`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.base.contract import GuardModel
from models.base.directory import CONFIG_FILE, DEFAULT_KIND, ModelDirectoryError, read_config
from models.base.session import Device
from models.embedder.guard import EmbedderGuard
from models.guardformer.config import KIND as GUARDFORMER

if TYPE_CHECKING:
    from models.policies import PolicySet


def load_model(
    path: str | Path,
    device: Device = "auto",
    cache_dir: str | Path | None = None,
    intra_op_threads: int = 0,
    precision: str = "auto",
    policies: PolicySet | None = None,
) -> GuardModel:
    """The guard model in directory `path` (its `config.json` says which kind it is).

    `device`: "auto" and "cuda" use CUDA when it works, else the CPU; "cpu" forces the CPU.
    `cache_dir`: where ONNX graphs built from weights are kept (default `~/.cache/guardstream/onnx`).
    `intra_op_threads`: ONNX Runtime threads per call (0: one per physical core).
    `precision`: which exported ONNX file to run ("fp32", "int8", "fp16"); "auto" takes the best
    one for the device. `policies`: what a GuardFormer model scores (default: the starter set);
    an embedder guard scores its own. Raises `ModelDirectoryError` for a missing or damaged directory.
    """
    model_dir = Path(path)
    config_file = model_dir / CONFIG_FILE
    kind = read_config(config_file).get("kind", DEFAULT_KIND)
    cache = Path(cache_dir) if cache_dir is not None else None
    if kind == GUARDFORMER:
        from models.guardformer.guard import GuardFormerGuard
        from models.policies import DEFAULT_POLICY_DIR, load_policies

        chosen = policies if policies is not None else load_policies(DEFAULT_POLICY_DIR)
        return GuardFormerGuard.load(model_dir, chosen, device, cache, intra_op_threads, precision)
    if kind != DEFAULT_KIND:
        raise ModelDirectoryError(f"{config_file}: unknown model kind {kind!r}")
    return EmbedderGuard.load(
        model_dir, device=device, cache_dir=cache, intra_op_threads=intra_op_threads, precision=precision
    )
