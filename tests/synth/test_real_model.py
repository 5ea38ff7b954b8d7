"""`guardstream synth` with the real SmolLM2-135M-Instruct GGUF model: in process, and behind the
llama.cpp OpenAI-compatible server started as a subprocess.

SmolLM2-135M is a tiny model: these tests check that the pipeline runs end to end and that its
bookkeeping is consistent, not that the data is good. Skipped only when llama_cpp (the synth
extra, in the dev lock) is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.synth.local_llama import LocalLlamaGenerator, default_gguf_path
from models.synth.openai_chat import OpenAIChatGenerator
from tests.synth.conftest import TAX_POLICY_FILE
from worker.cli import main as guardstream

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama_cpp is not installed (pip install 'guardstream[synth]', or make install)",
)

SERVER_START_TIMEOUT_S = 90.0
SHORT = ["--max-tokens", "64", "--no-progress", "--seed", "3"]
ROW_FIELDS = {"text", "policy", "label", "split", "rationale", "reflection", "generator", "source"}


def check_run(out: Path, per_label: int, generator_prefix: str) -> dict[str, Any]:
    """Assert that the output rows are valid and the summary counts add up; return the summary."""
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    requests = summary["requests"]
    assert requests["generation"] == 2 * per_label
    assert requests["ok"] + requests["failed"] == requests["generation"]
    assert sum(summary["failures"].values()) == requests["failed"]
    reflection = summary["reflection"]
    assert reflection["agreed"] + reflection["disagreed"] + reflection["unparsed"] == requests["ok"]
    assert reflection["dropped"] == reflection["disagreed"]  # the default --on-disagree
    assert summary["tokens"]["prompt"] > 0 and summary["tokens"]["completion"] > 0
    assert not summary["tokens"]["estimated"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["rows"]["total"]
    per_label_rows = summary["rows"]["per_policy"]["tax_advice"]
    assert per_label_rows["violates"] == per_label_rows["complies"]  # balanced
    for row in rows:
        assert set(row) == ROW_FIELDS and row["policy"] == "tax_advice" and row["source"] == "synthetic"
        assert row["label"] in (0, 1) and row["split"] in ("train", "validation")
        assert isinstance(row["text"], str) and len(row["text"].strip()) >= 8
        assert row["generator"].startswith(generator_prefix)
    return summary


async def test_local_generator_in_process() -> None:
    generator = LocalLlamaGenerator(default_gguf_path())
    await generator.probe()
    messages: list[Any] = [{"role": "user", "content": "Name one colour of the rainbow."}]
    first = await generator.complete(messages, max_tokens=12, temperature=0.0, seed=1)
    second = await generator.complete(messages, max_tokens=12, temperature=0.0, seed=1)
    await generator.aclose()
    assert first.text.strip() and first.text == second.text
    assert first.prompt_tokens > 5 and 0 < first.completion_tokens <= 12 and not first.estimated
    assert generator.name == "local:SmolLM2-135M-Instruct.Q4_1"


def test_synth_with_the_local_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tax.jsonl"
    status = guardstream(["synth", str(TAX_POLICY_FILE), "--out", str(out), "--per-label", "3", *SHORT])
    printed = capsys.readouterr().out
    assert status == 0
    summary = check_run(out, per_label=3, generator_prefix="local:")
    assert f"requests: 6 ({summary['requests']['ok']} ok" in printed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` with the default GGUF on a free port; yields its /v1 URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path())]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                log_tail = log_path.read_text()[-3000:]
                pytest.fail(f"llama_cpp.server did not answer in {SERVER_START_TIMEOUT_S} s:\n{log_tail}")
            time.sleep(0.3)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_openai_generator_against_the_llama_server(llama_server: str) -> None:
    generator = OpenAIChatGenerator(llama_server, timeout_s=60)
    await generator.probe()  # finds the model name through /models
    completion = await generator.complete(
        [{"role": "user", "content": "Write one question about taxes."}],
        max_tokens=24,
        temperature=0.7,
        seed=5,
    )
    await generator.aclose()
    assert completion.text.strip()
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0 and not completion.estimated
    assert generator.name.startswith("openai:")


def test_synth_against_the_llama_server(llama_server: str, tmp_path: Path) -> None:
    out = tmp_path / "tax.jsonl"
    argv = ["synth", str(TAX_POLICY_FILE), "--out", str(out), "--per-label", "2", "--generator", "openai"]
    status = guardstream([*argv, "--base-url", llama_server, "--concurrency", "2", *SHORT])
    assert status == 0
    check_run(out, per_label=2, generator_prefix="openai:")
