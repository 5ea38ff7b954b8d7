"""Export of a trained embedder guard directory: ONNX fp32 / int8 / fp16 files checked against torch.

From a trained model directory (encoder + head, as `guardstream train` writes it) this builds:

- fp32: the encoder, mean pooling, L2 normalization and head as one graph (`models.base.bert_onnx`);
- int8: the fp32 graph with ONNX Runtime's dynamic quantization (int8 weights with per-channel
  scales, activations quantized on the fly): a quarter of the size, the fastest on CPUs, but the
  activation scales are computed per call, so scores move slightly with the batch (opt-in);
- fp16: the fp32 graph in half precision with float32 inputs and outputs kept: half the size,
  for GPUs, and batch-independent on CPUs too.

Each file is checked against the torch model (`models.export.checks`) before it is kept.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from models.base import bert_onnx
from models.base.contract import FloatArray
from models.base.directory import CONFIG_FILE, PRECISIONS, TOKENIZER_FILE, ModelDirectoryError, OnnxFile
from models.base.mlp_head import MlpHead
from models.base.runner import WindowRunner
from models.base.session import create_session
from models.base.windows import WindowTokenizer, pad_windows
from models.embedder.config import GuardConfig
from models.embedder.guard import encoder_dir_of
from models.export.checks import (
    TOLERANCES,
    VERIFY_TEXTS,
    Check,
    ExportError,
    atomic_directory,
    convert,
    decision_agreement,
)

COPIED_FILES = ("MODEL_CARD.md", "metrics.json")


def torch_scores(
    encoder_dir: Path, head: MlpHead, tokenizer: WindowTokenizer, texts: Sequence[str]
) -> FloatArray:
    """Reference scores: the encoder in torch (float32), the head in float32, max over windows."""
    import torch

    from models.train.torch_encoder import SentenceEncoder

    encoder = SentenceEncoder.from_dir(encoder_dir).eval()
    rows = []
    with torch.no_grad():
        for item in tokenizer.encode(list(texts)):
            ids, mask = pad_windows(list(item.windows))
            embeddings = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            rows.append(head.predict(embeddings).max(axis=0))
    return np.stack(rows).astype(np.float32)


def onnx_scores(path: Path, tokenizer: WindowTokenizer, texts: Sequence[str]) -> FloatArray:
    """Scores of an ONNX file on the CPU, as the worker computes them."""
    session, _ = create_session(path, "cpu", 0)
    return WindowRunner(session, "scores").run_max(tokenizer.encode(list(texts)))


def check(
    precision: str,
    path: Path,
    tokenizer: WindowTokenizer,
    texts: Sequence[str],
    reference: FloatArray,
    thresholds: FloatArray,
    started: float,
) -> Check:
    scores = onnx_scores(path, tokenizer, texts)
    return Check(
        precision=precision,
        max_abs_diff=float(np.abs(scores - reference).max()),
        decision_agreement=decision_agreement(scores, reference, thresholds),
        tolerance=TOLERANCES[precision],
        size_bytes=path.stat().st_size,
        seconds=round(time.perf_counter() - started, 2),
    )


def source_parts(model_dir: Path) -> tuple[GuardConfig, Path, MlpHead]:
    """The trained directory's config, encoder directory and head; clear errors otherwise."""
    config = GuardConfig.load(model_dir / CONFIG_FILE)
    if config.encoder is None or config.head_file is None:
        raise ModelDirectoryError(f"{model_dir}: has no encoder and head to export (already exported?)")
    encoder = encoder_dir_of(model_dir, config)
    bert_onnx.verify_encoder(encoder, config.encoder.sha256)
    head_path = model_dir / config.head_file
    if not head_path.is_file():
        raise ModelDirectoryError(f"{model_dir}: head file {config.head_file} not found")
    return config, encoder, MlpHead.load(head_path)


def export_model(
    model_dir: Path, out_dir: Path, precisions: Sequence[str] = PRECISIONS, extra_texts: Sequence[str] = ()
) -> list[Check]:
    """Write the exported directory (see the module docstring); `ExportError` if a check fails."""
    config, encoder, head = source_parts(model_dir)
    tokenizer = WindowTokenizer(encoder / TOKENIZER_FILE, config.max_length, config.window_stride)
    texts = [*VERIFY_TEXTS, *extra_texts]
    thresholds = np.array([p.threshold for p in config.policies], dtype=np.float32)
    print(f"torch reference scores of {len(texts)} prompts ...", flush=True)
    reference = torch_scores(encoder, head, tokenizer, texts)
    with atomic_directory(out_dir) as partial:
        checks, files = _write_precisions(
            config, encoder, head, partial, precisions, tokenizer, texts, reference, thresholds
        )
        _finish(model_dir, config, encoder, partial, files, checks)
    return checks


def _write_precisions(
    config: GuardConfig,
    encoder: Path,
    head: MlpHead,
    partial: Path,
    precisions: Sequence[str],
    tokenizer: WindowTokenizer,
    texts: Sequence[str],
    reference: FloatArray,
    thresholds: FloatArray,
) -> tuple[list[Check], list[OnnxFile]]:
    assert config.encoder is not None  # noqa: S101 (source_parts checked it)
    fp32 = partial / ".build.fp32.onnx"
    onnx.save(bert_onnx.build_model(encoder, head, config.encoder.sha256), str(fp32))
    checks, files, failed = [], [], []
    for precision in precisions:
        started = time.perf_counter()
        target = partial / f"model.{precision}.onnx"
        print(f"{precision}: converting and checking against torch ...", flush=True)
        convert(fp32, precision, target)
        result = check(precision, target, tokenizer, texts, reference, thresholds, started)
        checks.append(result)
        print(
            f"{precision}: {result.size_bytes / 1e6:.1f} MB, max |score - torch| {result.max_abs_diff:.2e} "
            f"(tolerance {result.tolerance:g}), decisions agree {result.decision_agreement:.1%}",
            flush=True,
        )
        if result.passed:
            files.append(OnnxFile(precision, target.name, bert_onnx.file_sha256(target)))
        else:
            target.unlink()
            failed.append(precision)
    fp32.unlink()
    if failed:
        raise ExportError(
            f"{', '.join(failed)} differ from the torch model beyond tolerance; nothing written"
        )
    return checks, files


def _finish(
    model_dir: Path,
    config: GuardConfig,
    encoder: Path,
    partial: Path,
    files: list[OnnxFile],
    checks: list[Check],
) -> None:
    shutil.copyfile(encoder / TOKENIZER_FILE, partial / TOKENIZER_FILE)
    exported = dataclasses.replace(
        config, encoder=None, head_file=None, onnx=tuple(files), tokenizer_file=TOKENIZER_FILE
    )
    exported.save(partial / CONFIG_FILE)
    for name in COPIED_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, partial / name)
    report: dict[str, Any] = {
        "source": str(model_dir),
        "verification_prompts": len(VERIFY_TEXTS),
        "checks": [{**dataclasses.asdict(c), "passed": c.passed} for c in checks],
    }
    (partial / "export.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
