"""The agent's delivery contract with a stand-in stream: ack only what was delivered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from models.base.contract import Encoded, FloatArray
from tests.unit.fakes import FakeSource, KeywordModel, ListSink, prompt
from worker.agent import BatchAgent
from worker.cache import MemoryScoreCache
from worker.config import Settings
from worker.health import Health
from worker.pipeline import Pipeline


class SlowSink(ListSink):
    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def deliver(self, verdicts: Sequence[Any], letters: Sequence[Any]) -> None:
        self.started.set()
        await self.release.wait()
        await super().deliver(verdicts, letters)


class GatedModel(KeywordModel):
    """Scores only once `gate` is set; `entered` is set when a call starts."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        self.entered.set()
        self.gate.wait(10)
        return super().score(batch)


def agent_with(sink: ListSink, depth: int = 2, model: KeywordModel | None = None) -> BatchAgent:
    settings = Settings.model_validate({"batching": {"pipeline_depth": depth}})
    pipeline = Pipeline(settings, model or KeywordModel(), MemoryScoreCache(), sink)
    return BatchAgent(settings, pipeline, Health())


async def test_a_filling_batch_goes_now_only_when_no_batch_is_being_scored() -> None:
    model = GatedModel()
    stream = FakeSource([[prompt(0)]])
    task = asyncio.create_task(agent_with(ListSink(), model=model).run(stream))
    assert await asyncio.to_thread(model.entered.wait, 5)
    assert stream.go_now is not None and not stream.go_now(), "a batch would go while the model is busy"
    model.gate.set()
    await asyncio.wait_for(stream.all_acked.wait(), 5)
    assert stream.go_now(), "a batch would keep filling while the model waits for it"
    task.cancel()


async def test_acks_after_delivery_in_order() -> None:
    sink = ListSink()
    stream = FakeSource([[prompt(0), prompt(1)], [prompt(2)]])
    task = asyncio.create_task(agent_with(sink).run(stream))
    await asyncio.wait_for(stream.all_acked.wait(), 5)
    task.cancel()
    assert stream.acked == [0, 1, 2]
    assert [v.id for v in sink.verdicts] == ["r0", "r1", "r2"]


async def test_drain_finishes_the_batches_in_flight_and_takes_no_more() -> None:
    sink = SlowSink()
    stream = FakeSource([[prompt(0), prompt(1)], [prompt(2)], [prompt(3)]])
    agent = agent_with(sink, depth=2)
    task = asyncio.create_task(agent.run(stream))
    await sink.started.wait()
    drained = asyncio.create_task(agent.drain(timeout_s=5))
    await asyncio.sleep(0.05)
    assert not drained.done(), "drain returned while a batch was still being delivered"
    assert stream.acked == []
    sink.release.set()
    assert await drained is True
    await asyncio.sleep(0.05)
    task.cancel()
    assert stream.taken == 2, "a batch was taken after the drain began"
    assert stream.acked == [0, 1, 2]
    assert [v.id for v in sink.verdicts] == ["r0", "r1", "r2"]


async def test_next_batch_is_scored_while_one_is_delivered_and_acks_keep_order() -> None:
    sink = SlowSink()
    stream = FakeSource([[prompt(0)], [prompt(1)], [prompt(2)]])
    agent = agent_with(sink, depth=3)
    task = asyncio.create_task(agent.run(stream))
    await sink.started.wait()
    await asyncio.sleep(0.05)
    assert stream.taken == 3, "the agent waited for a delivery before taking the next batch"
    assert stream.acked == []
    sink.release.set()
    await asyncio.wait_for(stream.all_acked.wait(), 5)
    task.cancel()
    assert stream.acked == [0, 1, 2]
    assert [v.id for v in sink.verdicts] == ["r0", "r1", "r2"]


async def test_depth_one_takes_the_next_batch_only_after_delivery() -> None:
    sink = SlowSink()
    stream = FakeSource([[prompt(0)], [prompt(1)]])
    task = asyncio.create_task(agent_with(sink, depth=1).run(stream))
    await sink.started.wait()
    await asyncio.sleep(0.05)
    assert stream.taken == 1
    sink.release.set()
    await asyncio.wait_for(stream.all_acked.wait(), 5)
    task.cancel()
    assert stream.acked == [0, 1]


async def test_drain_times_out_when_the_batch_hangs() -> None:
    sink = SlowSink()
    agent = agent_with(sink)
    task = asyncio.create_task(agent.run(FakeSource([[prompt(0)]])))
    await sink.started.wait()
    assert await agent.drain(timeout_s=0.05) is False
    task.cancel()
