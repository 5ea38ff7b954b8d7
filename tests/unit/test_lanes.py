"""Long prompts in their own lane: short verdicts never wait for them, acks keep partition order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from models.base.contract import Encoded, FloatArray
from models.base.packing import split_by_length
from tests.unit.fakes import FakeSource, KeywordModel, ListSink, record
from worker.acks import InOrderAcks
from worker.agent import BatchAgent
from worker.cache import MemoryScoreCache
from worker.config import Settings
from worker.health import Health
from worker.lanes import Lane, LaneThread
from worker.pipeline import Pipeline


def value(request_id: str, text: str) -> bytes:
    return orjson.dumps({"id": request_id, "text": text})


LONG_TEXT = " ".join(f"word{i}" for i in range(40))  # six windows of the keyword model


def test_split_by_length_tells_long_prompts_apart_by_their_text_alone() -> None:
    def text(*window_lengths: int, columns: tuple[int, ...] | None = None) -> Encoded:
        return Encoded(tuple(np.zeros(n, dtype=np.int64) for n in window_lengths), columns=columns)

    items = [text(8), text(8, 8, 4), text(16, columns=(0, 1, 2)), text(12, 6)]
    assert split_by_length(items, long_tokens=16) == ([0, 2], [1, 3])


def test_acks_are_released_in_partition_order_only() -> None:
    events = [SimpleNamespace(p=p, o=o) for p, o in [(0, 0), (0, 1), (1, 0), (0, 2)]]
    acks: InOrderAcks[Any] = InOrderAcks(lambda e: e.p)
    acks.taken(events)
    assert acks.delivered([events[3], events[2]]) == [events[2]]  # partition 0 waits for offset 0
    assert acks.delivered([events[0]]) == [events[0]]
    assert acks.delivered([events[1]]) == [events[1], events[3]]
    assert acks.held() == 0


async def order_run(first: tuple[Lane, float, str], *waiting: tuple[Lane, float, str]) -> list[str]:
    """The order the model thread runs calls in: `first` holds the thread while the others are
    submitted, one after another."""
    thread = LaneThread("test-lanes")
    gate = threading.Event()
    order: list[str] = []

    def call(name: str) -> str:
        if name == first[2]:
            gate.wait(5)
        order.append(name)
        return name

    running = asyncio.ensure_future(thread.run(*first[:2], call, first[2]))
    await asyncio.sleep(0.05)  # the thread is busy with `first`
    futures = []
    for lane, batch_order, name in waiting:
        futures.append(asyncio.ensure_future(thread.run(lane, batch_order, call, name)))
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(running, *futures) == [first[2], *(name for *_, name in waiting)]
    thread.shutdown()
    return order


async def test_a_short_call_goes_before_waiting_long_calls() -> None:
    longs = [(Lane.LONG, 0.0, "long0"), (Lane.LONG, 0.0, "long1")]
    order = await order_run((Lane.LONG, 0.0, "first"), *longs, (Lane.SHORT, 0.0, "short"))
    assert order == ["first", "short", "long0", "long1"]


async def test_within_a_lane_the_older_batch_goes_first_whenever_it_was_submitted() -> None:
    newer = [(Lane.SHORT, 2.0, "newer0"), (Lane.SHORT, 2.0, "newer1")]
    order = await order_run((Lane.SHORT, 0.0, "running"), *newer, (Lane.SHORT, 1.0, "older"))
    assert order == ["running", "older", "newer0", "newer1"]


class GatedModel(KeywordModel):
    """Holds every model call of a long prompt until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        if any(len(item.windows) > 1 for item in batch):
            self.gate.wait(10)
        return super().score(batch)


async def test_short_verdicts_do_not_wait_for_a_long_neighbour_and_acks_keep_order() -> None:
    settings = Settings.model_validate({"batching": {"long_prompt_tokens": 16, "max_batch_tokens": 64}})
    model, sink = GatedModel(), ListSink()
    agent = BatchAgent(settings, Pipeline(settings, model, MemoryScoreCache(), sink), Health())
    batches = [
        [
            record(value("s0", "short one"), 0),
            record(value("l1", LONG_TEXT), 1),
            record(value("s2", "short two"), 2),
        ],
        [record(value("s3", "short three"), 3)],
    ]
    stream = FakeSource([[r for r in batch] for batch in batches])
    task = asyncio.create_task(agent.run(stream))
    for _ in range(200):
        if len(sink.verdicts) == 3:
            break
        await asyncio.sleep(0.01)
    assert [v.id for v in sink.verdicts] == ["s0", "s2", "s3"], "short verdicts waited for the long one"
    assert stream.acked == [0], "an offset after the undelivered long prompt was acked"
    model.gate.set()
    await asyncio.wait_for(stream.all_acked.wait(), 5)
    task.cancel()
    assert [v.id for v in sink.verdicts] == ["s0", "s2", "s3", "l1"]
    assert stream.acked == [0, 1, 2, 3]
    assert max(model.padded) <= 16, "a long-lane call went over long_prompt_tokens"


async def test_process_all_scores_the_long_prompts_too() -> None:
    settings = Settings.model_validate({"batching": {"long_prompt_tokens": 16}})
    pipeline = Pipeline(settings, KeywordModel(), MemoryScoreCache(), ListSink())
    records = [record(value("s", "short"), 0), record(value("l", LONG_TEXT + " bomb"), 1)]
    first = await pipeline.process(records)
    assert [v.id for v in first.verdicts] == ["s"] and first.long is not None
    result = await pipeline.process_all(
        [record(value(r, t), i) for i, (r, t) in enumerate([("s2", "x"), ("l2", LONG_TEXT + " bomb")])]
    )
    assert sorted(v.id for v in result.verdicts) == ["l2", "s2"] and result.long is None
    assert next(v for v in result.verdicts if v.id == "l2").verdict == "block"
    pipeline.close()
