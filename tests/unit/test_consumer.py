"""KafkaSource with a stand-in consumer: batches fill up to their size, only acked offsets are
committed, and partitions that move are settled and committed first (the real broker: tests/integration)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from worker.config import KafkaSettings
from worker.consumer import KafkaSource
from worker.schema import RawRecord

P0, P1 = TopicPartition("prompts", 0), TopicPartition("prompts", 1)


def message(tp: TopicPartition, offset: int, headers: tuple[Any, ...] = ()) -> Any:
    return SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        key=b"k",
        value=b"v",
        headers=headers,
        timestamp=5,
    )


class StandInConsumer:
    """Hands out the fetches given, then nothing; records the commits."""

    def __init__(self, fetches: list[dict[TopicPartition, list[Any]]]) -> None:
        self.fetches = fetches
        self.asked: list[int] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.assigned = {P0, P1}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.asked.append(max_records)
        if self.fetches:
            return self.fetches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def source_of(consumer: StandInConsumer, settled: list[float] | None = None) -> KafkaSource:
    async def settle(timeout_s: float) -> bool:
        if settled is not None:
            settled.append(timeout_s)
        return True

    return KafkaSource(KafkaSettings(), "test:1", settle, consumer=consumer)


async def first_batches(
    source: KafkaSource,
    count: int,
    max_records: int,
    within_s: float,
    go_now: Callable[[], bool] = lambda: False,
) -> list[list[RawRecord]]:
    batches = []
    async for batch in source.batches(max_records, within_s, go_now):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


async def test_a_batch_fills_from_later_fetches_up_to_its_size() -> None:
    consumer = StandInConsumer(
        [
            {P0: [message(P0, 0), message(P0, 1)]},
            {P1: [message(P1, 0, (("trace", None),))]},
            {P0: [message(P0, 2)]},
        ]
    )
    [first, second] = await first_batches(source_of(consumer), 2, max_records=3, within_s=0.5)
    assert [(r.partition, r.offset) for r in first] == [(0, 0), (0, 1), (1, 0)]
    assert [(r.partition, r.offset) for r in second] == [(0, 2)]
    assert consumer.asked[:2] == [3, 1], "the second fetch asked for more than the batch had room for"
    assert first[2].headers == (("trace", b""),) and first[0].timestamp_ms == 5


async def test_a_batch_goes_when_its_wait_is_over() -> None:
    consumer = StandInConsumer([{P0: [message(P0, 0)]}])
    [batch] = await first_batches(source_of(consumer), 1, max_records=64, within_s=0.05)
    assert [r.offset for r in batch] == [0]


async def test_a_batch_goes_without_filling_when_the_model_would_wait() -> None:
    consumer = StandInConsumer([{P0: [message(P0, 0)]}, {P0: [message(P0, 1)]}])
    started = time.monotonic()
    [batch] = await first_batches(source_of(consumer), 1, max_records=64, within_s=5, go_now=lambda: True)
    assert [r.offset for r in batch] == [0] and time.monotonic() - started < 1


async def test_a_filling_batch_goes_once_the_model_would_wait() -> None:
    consumer = StandInConsumer([{P0: [message(P0, 0)]}, {P0: [message(P0, 1)]}])
    loop = asyncio.get_running_loop()
    free_at = loop.time() + 0.2  # another batch is scored until then
    [batch] = await first_batches(
        source_of(consumer), 1, max_records=64, within_s=30, go_now=lambda: loop.time() >= free_at
    )
    assert [r.offset for r in batch] == [0, 1], "records fetched while the model was busy joined the batch"
    assert loop.time() - free_at < 1, "the batch waited for its whole fill time"
    assert all(asked <= 64 for asked in consumer.asked)


async def test_only_acked_offsets_are_committed_once() -> None:
    consumer = StandInConsumer([])
    source = source_of(consumer)
    batch = [
        RawRecord("prompts", 0, 5, None, b""),
        RawRecord("prompts", 0, 6, None, b""),
        RawRecord("prompts", 1, 2, None, b""),
    ]
    await source.commit()
    assert consumer.commits == [], "committed with nothing acked"
    source.ack(batch[:1] + batch[2:])
    await source.commit()
    source.ack(batch[1:2])
    await source.commit()
    await source.commit()
    assert consumer.commits == [{P0: 6, P1: 3}, {P0: 7}]


async def test_partitions_that_move_are_settled_committed_and_forgotten() -> None:
    consumer = StandInConsumer([])
    settled: list[float] = []
    source = source_of(consumer, settled)
    source.ack([RawRecord("prompts", 0, 9, None, b""), RawRecord("prompts", 1, 4, None, b"")])
    await source._on_revoked(set())
    assert settled == [] and consumer.commits == [], (
        "a first assignment (nothing revoked) settled or committed"
    )
    await source._on_revoked({P0})
    assert settled == [KafkaSettings().session_timeout_s]
    assert consumer.commits == [{P0: 10, P1: 5}]
    assert source.acked() == {("prompts", 1): 5}


async def test_acks_of_a_partition_no_longer_held_are_not_committed() -> None:
    consumer = StandInConsumer([])
    source = source_of(consumer)
    consumer.assigned = {P1}
    source.ack([RawRecord("prompts", 0, 3, None, b""), RawRecord("prompts", 1, 8, None, b"")])
    await source.commit()
    assert consumer.commits == [{P1: 9}]
    assert source.acked() == {("prompts", 1): 9}


def test_joined_once_the_group_assigns_even_nothing() -> None:
    source = source_of(StandInConsumer([]))
    assert not source.joined.is_set()
    source._on_assigned(set())
    assert source.joined.is_set()
