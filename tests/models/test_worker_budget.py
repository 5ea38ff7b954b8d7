"""The worker's token budget bounds what a GuardFormer really computes: windows x asked policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

from models.train.guardformer_model import GuardFormerModel
from models.train.torch_encoder import SentenceEncoder
from models.train.train_guardformer import TrainSettings, save_model
from tests.tiny_models import tiny_bert_config
from tests.unit.fakes import ListSink, record
from worker.app import load_guard_model
from worker.cache import MemoryScoreCache
from worker.config import load_settings
from worker.pipeline import Pipeline

BUDGET = 1024


@pytest.fixture(scope="module")
def guardformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.base import bert_onnx

    torch.manual_seed(0)
    model = GuardFormerModel(SentenceEncoder.from_config(tiny_bert_config(64)), head_hidden=16).eval()
    out = tmp_path_factory.mktemp("tiny-guardformer")
    settings = TrainSettings(max_length=64, max_policy_tokens=24)
    save_model(out, model, bert_onnx.encoder_dir(), settings, [], "tiny-gf", "0.0.1")
    return out


async def test_every_model_call_stays_within_max_batch_tokens(guardformer_dir: Path, tmp_path: Path) -> None:
    model_settings = {"path": guardformer_dir, "device": "cpu", "cache_dir": tmp_path / "cache"}
    batching = {"max_batch_tokens": BUDGET, "max_batch_requests": 64}
    settings = load_settings({"model": model_settings, "batching": batching})
    model: Any = load_guard_model(settings)
    session = model.runner.session
    padded: list[int] = []
    run = session.run

    def recording_run(names: Any, feeds: dict[str, Any]) -> Any:
        padded.append(int(feeds["input_ids"].size))
        return run(names, feeds)

    session.run = recording_run
    texts = [f"Question {i}: which stock should I buy with my savings this year?" for i in range(16)]
    records = [record(orjson.dumps({"id": str(i), "text": t}), i) for i, t in enumerate(texts)]
    result = await Pipeline(settings, model, MemoryScoreCache(), ListSink()).process(records)
    assert len(result.verdicts) == 16
    assert max(padded) <= BUDGET, f"model calls of {padded} padded tokens; the budget is {BUDGET}"
