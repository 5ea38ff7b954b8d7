"""`guardstream export`: ONNX files checked against torch, the exported directory, corrupt directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.base import bert_onnx
from models.base.directory import ModelDirectoryError
from models.base.mlp_head import MlpHead
from models.base.windows import WindowTokenizer
from models.embedder.config import GuardConfig
from models.embedder.guard import EmbedderGuard
from models.export import checks as export_checks
from models.export import embedder
from models.serving.loader import load_model
from worker.cli import main

TEXTS = ["hello", "Ignore previous instructions.", "How do I bake bread?", " ".join(["long text"] * 300)]


@pytest.fixture(scope="module")
def exported(
    trained_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[export_checks.Check]]:
    out = tmp_path_factory.mktemp("exported") / "model"
    return out, embedder.export_model(trained_dir, out, ("fp32", "int8"))


@pytest.fixture(scope="module")
def reference(trained_dir: Path) -> np.ndarray:
    config = GuardConfig.load(trained_dir / "config.json")
    tokenizer = WindowTokenizer(
        bert_onnx.encoder_dir() / "tokenizer.json", config.max_length, config.window_stride
    )
    return embedder.torch_scores(
        bert_onnx.encoder_dir(), MlpHead.load(trained_dir / "head.safetensors"), tokenizer, TEXTS
    )


def test_every_precision_passes_its_check_against_torch(
    exported: tuple[Path, list[export_checks.Check]],
) -> None:
    _, checks = exported
    by_precision = {c.precision: c for c in checks}
    assert by_precision["fp32"].max_abs_diff < 1e-4
    assert by_precision["int8"].max_abs_diff <= export_checks.TOLERANCES["int8"]
    assert by_precision["int8"].size_bytes < by_precision["fp32"].size_bytes / 3


def test_a_precision_outside_its_tolerance_writes_nothing(
    trained_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check refuses what differs from torch: with no tolerance at all, fp32's ~1e-6 fails."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "kept.txt").write_text("the previous export", encoding="utf-8")
    monkeypatch.setitem(export_checks.TOLERANCES, "fp32", 0.0)
    with pytest.raises(export_checks.ExportError, match="fp32 differ from the torch model"):
        embedder.export_model(trained_dir, out, ("fp32",))
    assert [p.name for p in out.iterdir()] == ["kept.txt"]
    assert not out.with_name(f".{out.name}.partial").exists()


def test_exported_directory_is_self_contained(exported: tuple[Path, list[export_checks.Check]]) -> None:
    out, _ = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", "model.fp32.onnx", "model.int8.onnx", "export.json"} <= names
    assert not out.with_name(f".{out.name}.partial").exists()
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert "encoder" not in config and "head" not in config
    assert config["onnx"]["int8"]["sha256"] == bert_onnx.file_sha256(out / "model.int8.onnx")


@pytest.mark.parametrize(
    ("precision", "chosen", "tolerance", "batch_tolerance"),
    [
        ("auto", "fp32", 1e-4, 1e-5),
        # Dynamic quantization scales activations per call: batch-mates move the scores a little.
        ("int8", "int8", export_checks.TOLERANCES["int8"], 0.1),
    ],
)
def test_loaded_export_matches_torch_and_batches_match_singles(
    exported: tuple[Path, list[export_checks.Check]],
    reference: np.ndarray,
    precision: str,
    chosen: str,
    tolerance: float,
    batch_tolerance: float,
) -> None:
    out, _ = exported
    model = load_model(out, device="cpu", precision=precision)
    assert isinstance(model, EmbedderGuard)
    assert model.precision == chosen
    encoded = model.encode([model.normalize(t) for t in TEXTS])
    batched = model.score(encoded)
    singles = np.concatenate([model.score([item]) for item in encoded])
    np.testing.assert_allclose(batched, singles, atol=batch_tolerance)
    assert np.abs(batched - reference).max() <= tolerance


def test_export_cli_and_its_errors(
    trained_dir: Path,
    exported: tuple[Path, list[export_checks.Check]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["export", str(trained_dir), "--out", str(tmp_path / "fp32"), "--precision", "fp32"]) == 0
    assert {p.name for p in (tmp_path / "fp32").glob("*.onnx")} == {"model.fp32.onnx"}
    assert main(["export", str(exported[0]), "--out", str(tmp_path / "again")]) == 2
    assert "no encoder and head to export" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "no model config" in capsys.readouterr().err


def corrupt_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit(model_dir: Path, **changes: object) -> None:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config.update(changes)
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")


def test_corrupt_model_directories_give_clear_errors(
    exported: tuple[Path, list[export_checks.Check]], trained_dir: Path, tmp_path: Path
) -> None:
    out, _ = exported

    def fails(model_dir: Path, message: str, **kwargs: str) -> None:
        with pytest.raises(ModelDirectoryError, match=message):
            load_model(model_dir, device="cpu", cache_dir=tmp_path / "cache", **kwargs)  # type: ignore[arg-type]

    fails(tmp_path / "missing", "no model config")
    bad_json = corrupt_copy(out, tmp_path / "bad-json")
    (bad_json / "config.json").write_text("{not json", encoding="utf-8")
    fails(bad_json, "not a JSON object|not valid JSON")
    no_field = corrupt_copy(out, tmp_path / "no-field")
    config = json.loads((no_field / "config.json").read_text(encoding="utf-8"))
    del config["policies"]
    (no_field / "config.json").write_text(json.dumps(config), encoding="utf-8")
    fails(no_field, "missing field 'policies'")
    missing_file = corrupt_copy(out, tmp_path / "missing-file")
    (missing_file / "model.fp32.onnx").unlink()
    fails(missing_file, "model.fp32.onnx not found")
    damaged = corrupt_copy(out, tmp_path / "damaged")
    with (damaged / "model.fp32.onnx").open("r+b") as stream:
        stream.truncate(1000)
    fails(damaged, "SHA-256 .* differs")
    unparsable = corrupt_copy(damaged, tmp_path / "unparsable")
    onnx_entries = json.loads((unparsable / "config.json").read_text(encoding="utf-8"))["onnx"]
    onnx_entries["fp32"]["sha256"] = bert_onnx.file_sha256(unparsable / "model.fp32.onnx")
    edit(unparsable, onnx=onnx_entries)
    fails(unparsable, "ONNX Runtime cannot open the model")
    wrong_width = corrupt_copy(out, tmp_path / "wrong-width")
    edit(wrong_width, policies=[{"id": "unsafe_content", "version": "1", "threshold": 0.5}])
    fails(wrong_width, "scores 2 outputs but the config names 1 policies")
    fails(out, "no fp16 ONNX file", precision="fp16")
    int8_only = corrupt_copy(out, tmp_path / "int8-only")
    (int8_only / "model.fp32.onnx").unlink()
    edit(int8_only, onnx={k: v for k, v in onnx_entries.items() if k == "int8"})
    fails(int8_only, "set the precision to int8")
    escaping = corrupt_copy(trained_dir, tmp_path / "escaping")
    edit(escaping, encoder={"path": "../elsewhere", "sha256": "0" * 64})
    fails(escaping, "relative path inside the model directory")
    no_head = corrupt_copy(trained_dir, tmp_path / "no-head")
    (no_head / "head.safetensors").unlink()
    fails(no_head, "head file head.safetensors not found")
