"""ONNX Runtime sessions on CUDA when it is usable, on CPU otherwise.

`onnxruntime-gpu` lists the CUDA provider as available even when the CUDA libraries are missing;
asking for it then makes ONNX Runtime print errors and carry on with the CPU. Here the provider
library is loaded first to see whether CUDA can work, so the fallback is one log line.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

log = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]
DEVICES: tuple[Device, ...] = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Session log level: errors only (ONNX Runtime's warnings at load time are not actionable here).
_LOG_SEVERITY_ERROR = 3


def cuda_unusable_reason() -> str | None:
    """Why the CUDA provider cannot run here, or None when it looks usable."""
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        # Loads CUDA/cuDNN from the nvidia-* wheels when they are installed; prints when absent.
        with contextlib.redirect_stdout(io.StringIO()):
            preload()
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.is_file():
        return None  # another platform's layout: let ONNX Runtime decide
    try:
        ctypes.CDLL(str(library.parent / "libonnxruntime_providers_shared.so"), mode=os.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc)
    return None


def session_options(intra_op_threads: int = 0) -> ort.SessionOptions:
    """Sequential execution, full graph optimization, `intra_op_threads` (0: one per core)."""
    if intra_op_threads < 0:
        raise ValueError("intra_op_threads must be >= 0")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = _LOG_SEVERITY_ERROR
    return options


def _providers(device: Device) -> list[Any]:
    if device == "cpu":
        return [CPU]
    reason = cuda_unusable_reason()
    if reason is None:
        return [(CUDA, {"cudnn_conv_algo_search": "DEFAULT"}), CPU]
    level = logging.WARNING if device == "cuda" else logging.INFO
    log.log(level, "CUDA is not usable (%s); running the model on CPU", reason)
    return [CPU]


def create_session(
    model: str | bytes | Path, device: Device = "auto", intra_op_threads: int = 0
) -> tuple[ort.InferenceSession, str]:
    """A session for `model` (path or serialized bytes) and the device it really runs on.

    `device` "auto" and "cuda" both use CUDA when it works and fall back to the CPU otherwise.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    providers = _providers(device)
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, session_options(intra_op_threads), providers=providers)
    actual = "cuda" if CUDA in session.get_providers() else "cpu"
    if len(providers) > 1 and actual == "cpu":
        log.warning("CUDA provider failed to initialize; running the model on CPU")
    return session, actual
