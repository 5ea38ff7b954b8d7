"""Export of a trained GuardFormer directory: ONNX files checked against the torch model.

Called by `guardstream export` when the directory's config says kind "guardformer". Each
precision's graph (encoder, mean pooling, head) scores (policy, prompt) pairs of the starter
policies and the export check's prompts; the largest difference from the torch model must stay
within the precision's tolerance and the decisions at each policy's threshold must agree on at
least 95% of the pairs. The exported directory holds `config.json` (with the files' SHA-256),
`tokenizer.json`, the ONNX files, `export.json`, and copies of `train.json` and `metrics.json`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from models.base import bert_onnx
from models.base.contract import FloatArray, Policy
from models.base.directory import CONFIG_FILE, TOKENIZER_FILE, OnnxFile
from models.base.mlp_head import MlpHead
from models.base.packing import score_items
from models.export.checks import (
    TOLERANCES,
    Check,
    ExportError,
    atomic_directory,
    convert,
    decision_agreement,
)
from models.guardformer.calibration import apply_shifts, shifts_for
from models.guardformer.config import GuardFormerConfig
from models.guardformer.guard import GuardFormerGuard
from models.policies import DEFAULT_POLICY_DIR, PolicySet, load_policies

COPIED_FILES = ("train.json", "metrics.json", "MODEL_CARD.md")


def torch_scores(
    model_dir: Path, config: GuardFormerConfig, policies: PolicySet, texts: Sequence[str]
) -> np.ndarray:
    """[len(texts), len(policies)] reference scores of the torch model."""
    import torch

    from models.guardformer.instruction import InstructionTokenizer
    from models.train.guardformer_data import Pair
    from models.train.guardformer_io import PairEncoder, load_model, score_pairs

    assert config.encoder_path is not None  # noqa: S101 (a trained directory)
    tokenizer = InstructionTokenizer(
        model_dir / config.encoder_path / TOKENIZER_FILE, config.max_length, config.max_policy_tokens
    )
    model = load_model(model_dir / config.encoder_path, init_from=model_dir)
    pairs = [Pair(p.id, t, 0, "export") for t in texts for p in policies]
    encoder = PairEncoder(tokenizer, {p.id: p for p in policies})
    scores = score_pairs(model, encoder, pairs, torch.device("cpu"))
    return scores.reshape(len(texts), len(policies))


def export_guardformer(
    model_dir: Path, out_dir: Path, precisions: Sequence[str], texts: Sequence[str]
) -> list[Check]:
    config = GuardFormerConfig.load(model_dir / CONFIG_FILE)
    if config.encoder_path is None or config.head_file is None or config.encoder_sha256 is None:
        raise ExportError(f"{model_dir}: has no encoder and head to export (already exported?)")
    policies = load_policies(DEFAULT_POLICY_DIR)
    normalized = [" ".join(t.split()) for t in texts]
    print(f"torch reference scores of {len(texts)} prompts x {len(policies)} policies ...", flush=True)
    reference = torch_scores(model_dir, config, policies, normalized)
    policy_infos = [Policy(p.id, p.version, p.threshold, p.fingerprint) for p in policies]
    reference = apply_shifts(reference, shifts_for(policy_infos, config.calibration))
    with atomic_directory(out_dir) as partial:
        fp32 = partial / ".build.fp32.onnx"
        head = MlpHead.load(model_dir / config.head_file)
        encoder = model_dir / config.encoder_path
        onnx.save(bert_onnx.build_model(encoder, head, config.encoder_sha256), str(fp32))
        shutil.copyfile(encoder / TOKENIZER_FILE, partial / TOKENIZER_FILE)
        checks = _write_precisions(partial, fp32, config, policies, precisions, normalized, reference)
        fp32.unlink()
        failed = [c.precision for c in checks if not c.passed]
        if failed:
            raise ExportError(
                f"{', '.join(failed)} differ from the torch model beyond tolerance; nothing written"
            )
        _finish(model_dir, partial, checks)
    return checks


def _write_precisions(
    partial: Path,
    fp32: Path,
    config: GuardFormerConfig,
    policies: PolicySet,
    precisions: Sequence[str],
    texts: Sequence[str],
    reference: np.ndarray,
) -> list[Check]:
    checks: list[Check] = []
    files: list[OnnxFile] = []
    for precision in precisions:
        started = time.perf_counter()
        target = partial / f"model.{precision}.onnx"
        convert(fp32, precision, target)
        files.append(OnnxFile(precision, target.name, bert_onnx.file_sha256(target)))
        _write_config(partial, config, files)
        guard = GuardFormerGuard.load(partial, policies, device="cpu", precision=precision)
        scores = score_items(guard, guard.encode(list(texts)))
        thresholds = np.asarray([p.threshold for p in policies], dtype=np.float32)
        checks.append(_check(precision, target, scores, reference, thresholds, started))
        last = checks[-1]
        print(
            f"{precision}: max |score - torch| {last.max_abs_diff:.2e}, "
            f"decisions agree {last.decision_agreement:.1%}",
            flush=True,
        )
    return checks


def _check(
    precision: str,
    path: Path,
    scores: FloatArray,
    reference: FloatArray,
    thresholds: FloatArray,
    started: float,
) -> Check:
    return Check(
        precision=precision,
        max_abs_diff=float(np.abs(scores - reference).max()),
        decision_agreement=decision_agreement(scores, reference, thresholds),
        tolerance=TOLERANCES[precision],
        size_bytes=path.stat().st_size,
        seconds=round(time.perf_counter() - started, 2),
    )


def _write_config(partial: Path, config: GuardFormerConfig, files: list[OnnxFile]) -> None:
    config.exported(tuple(files), TOKENIZER_FILE).save(partial / CONFIG_FILE)


def _finish(model_dir: Path, partial: Path, checks: list[Check]) -> None:
    for name in COPIED_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, partial / name)
    report = {
        "source": str(model_dir),
        "checks": [{**dataclasses.asdict(c), "passed": c.passed} for c in checks],
    }
    (partial / "export.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
