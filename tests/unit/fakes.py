"""Small stand-ins for unit tests of the pipeline (the real model is tested in tests/models)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import orjson

from models.base.contract import (
    Columns,
    Cost,
    Encoded,
    FloatArray,
    ModelInfo,
    Policy,
    split_windows_within,
    window_cost,
)
from worker.schema import DeadLetter, RawRecord, Verdict

if TYPE_CHECKING:
    from worker.pipeline import Pipeline

INFO = ModelInfo(
    name="fake",
    version="0.0.1",
    policies=(Policy("unsafe_content", "1", 0.5), Policy("prompt_injection", "2", 0.5)),
    max_length=8,
)


class KeywordModel:
    """Scores 0.9 for `unsafe_content` when the text has "bomb", for `prompt_injection` on "ignore".

    With `fail_on`, a text holding that string makes the model raise ("": every text does).
    """

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[int] = []
        self.padded: list[int] = []  # each call's rows x its longest row
        self.asked: list[tuple[int, ...] | None] = []  # each scored item's columns
        self.fail_on = fail_on
        self._texts: dict[int, str] = {}

    @property
    def info(self) -> ModelInfo:
        return INFO

    @property
    def device(self) -> str:
        return "cpu"

    def normalize(self, text: str) -> str:
        return " ".join(text.split())

    def encode(self, texts: Sequence[str], columns: Sequence[Columns] | None = None) -> list[Encoded]:
        """Windows of up to `max_length` ids, each starting with the text's tag."""
        out = []
        asked = columns if columns is not None else [None] * len(texts)
        for text, wanted in zip(texts, asked, strict=True):
            tag = hash(text) & 0xFFFF
            self._texts[tag] = text
            words = np.arange(len(text.split()), dtype=np.int64)
            size = INFO.max_length - 1
            windows = tuple(
                np.array([tag, *words[i : i + size]], dtype=np.int64)
                for i in range(0, max(len(words), 1), size)
            )
            out.append(Encoded(windows, columns=wanted))
        return out

    def cost(self, item: Encoded) -> Cost:
        return window_cost(item)

    def split(self, item: Encoded, max_tokens: int) -> list[Encoded]:
        return split_windows_within(item, max_tokens)

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        self.calls.append(len(batch))
        costs = [self.cost(item) for item in batch]
        self.padded.append(sum(c.rows for c in costs) * max((c.longest for c in costs), default=0))
        self.asked += [item.columns for item in batch]
        rows = []
        for item in batch:
            text = self._texts[int(item.windows[0][0])]
            if self.fail_on is not None and self.fail_on in text:
                raise RuntimeError("boom")
            rows.append([0.9 if "bomb" in text else 0.1, 0.9 if "ignore" in text.lower() else 0.1])
        return np.array(rows, dtype=np.float32)


class ListSink:
    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.letters: list[DeadLetter] = []

    async def deliver(self, verdicts: Sequence[Verdict], letters: Sequence[DeadLetter]) -> None:
        self.verdicts.extend(verdicts)
        self.letters.extend(letters)


def record(value: bytes | None, offset: int = 0, key: bytes | None = None) -> RawRecord:
    return RawRecord("prompts", 0, offset, key, value, (("trace", b"t-1"),), 1_700_000_000_000)


def prompt(offset: int) -> RawRecord:
    """A consumed record of a valid prompt, as the agent takes it from the source."""
    return record(orjson.dumps({"id": f"r{offset}", "text": f"text {offset}"}), offset)


class FakeSource:
    """The consumer as the agent uses it: `batches` of records, `ack` of delivered ones."""

    def __init__(self, batches: list[list[RawRecord]]) -> None:
        self.batches_to_give = batches
        self.acked: list[int] = []
        self.taken = 0
        self.go_now: Callable[[], bool] | None = None  # the agent's: should a filling batch go now
        self.all_acked = asyncio.Event()
        self._total = sum(len(b) for b in batches)

    async def batches(
        self, max_records: int, within_s: float, go_now: Callable[[], bool]
    ) -> AsyncIterator[list[RawRecord]]:
        self.go_now = go_now
        for batch in self.batches_to_give:
            self.taken += 1
            yield batch
        await asyncio.Event().wait()

    def ack(self, records: Iterable[RawRecord]) -> None:
        self.acked += [r.offset for r in records]
        if len(self.acked) == self._total:
            self.all_acked.set()


async def run_agent(
    pipeline: Pipeline, *batches: Sequence[RawRecord], on_fatal: Callable[[], None] | None = None
) -> FakeSource:
    """Run the batches through the wiring production runs (the agent's take, process, deliver and
    ack) and return once every event is acked, or once the agent gave up on a batch (`on_fatal`)."""
    from worker.agent import BatchAgent
    from worker.config import Settings
    from worker.health import Health

    source = FakeSource([list(batch) for batch in batches])
    failed = asyncio.Event()

    def fatal() -> None:
        failed.set()
        if on_fatal is not None:
            on_fatal()

    task = asyncio.create_task(BatchAgent(Settings(), pipeline, Health(), fatal).run(source))
    waits = [asyncio.ensure_future(source.all_acked.wait()), asyncio.ensure_future(failed.wait())]
    await asyncio.wait(waits, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    for waiting in [*waits, task]:
        waiting.cancel()
    return source
