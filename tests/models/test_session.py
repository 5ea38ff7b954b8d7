"""Device selection, CPU fallback and the ONNX build cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from models.base import session as session_module
from models.base.bert_onnx import IR_VERSION, OPSET
from models.base.onnx_cache import cache_key, load_or_build
from models.base.session import create_session, session_options


def tiny_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def run_tiny(session: ort.InferenceSession) -> np.ndarray:
    (out,) = session.run(None, {"x": np.array([-1.0, 2.0], dtype=np.float32)})
    return np.asarray(out)


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_falls_back_to_cpu_with_one_log_line(
    device: session_module.Device, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    if session_module.cuda_unusable_reason() is None:
        pytest.skip("CUDA works on this machine")
    caplog.set_level(logging.INFO, logger=session_module.__name__)
    session, actual = create_session(tiny_model().SerializeToString(), device)
    assert actual == "cpu"
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert len(caplog.records) == 1
    assert "CUDA is not usable" in caplog.records[0].getMessage()
    np.testing.assert_array_equal(run_tiny(session), [0.0, 2.0])
    captured = capfd.readouterr()
    assert "onnxruntime" not in captured.err
    assert "onnxruntime" not in captured.out


def test_cpu_asks_for_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=session_module.__name__)
    session, actual = create_session(tiny_model().SerializeToString(), "cpu", intra_op_threads=1)
    assert actual == "cpu"
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert not caplog.records


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="device"):
        create_session(tiny_model().SerializeToString(), "tpu")  # type: ignore[arg-type]


def test_negative_thread_count_is_refused() -> None:
    with pytest.raises(ValueError, match="intra_op_threads"):
        session_options(-1)


def test_cache_builds_once_and_writes_atomically(tmp_path: Path) -> None:
    builds: list[int] = []

    def build() -> onnx.ModelProto:
        builds.append(1)
        return tiny_model()

    key = cache_key("tiny", "1")
    first = load_or_build(key, build, tmp_path / "cache")
    second = load_or_build(key, build, tmp_path / "cache")
    assert first == second == tmp_path / "cache" / f"{key}.onnx"
    assert len(builds) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.onnx"]
    session, _ = create_session(first, "cpu")
    np.testing.assert_array_equal(run_tiny(session), [0.0, 2.0])


def test_unwritable_cache_keeps_the_model_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    source = load_or_build(cache_key("tiny", "2"), tiny_model, blocker / "cache")
    assert isinstance(source, bytes)
    session, _ = create_session(source, "cpu")
    np.testing.assert_array_equal(run_tiny(session), [0.0, 2.0])


def test_cache_keys_differ_by_every_part() -> None:
    assert len({cache_key("a", "b"), cache_key("a", "c"), cache_key("ab"), cache_key("a", "b", "")}) == 4
