"""KafkaSink: batches per partition, retries what the brokers did not take (within
outage_grace_s), bounded output size."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, NodeNotReadyError
from aiokafka.partitioner import DefaultPartitioner

from worker import sink as sink_module
from worker.config import KafkaSettings
from worker.schema import DeadLetter, RawRecord, Reason, Verdict
from worker.sink import MAX_OUTPUT_BYTES, DeliveryFailed, KafkaSink

SOURCE = RawRecord("prompts", 0, 7, b"k", b'{"id": "a", "text": "hi"}')


class FakeBatch:
    """A producer batch that holds up to `capacity` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: list[bytes | None] = []
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes, headers: Any) -> Any:
        if self.closed or len(self.keys) >= self.capacity:
            return None
        self.keys.append(key)
        return object()


class FlakyProducer:
    """Fails the batches listed in `failures` (by send number), then takes everything."""

    def __init__(
        self,
        failures: dict[int, BaseException] | None = None,
        raise_on: set[int] | None = None,
        capacity: int = 1,
        partitions: int = 1,
    ) -> None:
        self.failures = failures or {}
        self.raise_on = raise_on or set()
        self.capacity = capacity
        self.partitions = set(range(partitions))
        self.calls: list[bytes | None] = []  # keys, batch after batch
        self.sends: list[tuple[int, list[bytes | None]]] = []  # (partition, keys) of each batch
        self.sent_open = 0  # batches sent before they were closed (they would linger)
        self.delivered: list[bytes | None] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        call = len(self.sends)
        self.sent_open += not batch.closed
        self.sends.append((partition, batch.keys))
        self.calls += batch.keys
        if call in self.raise_on:
            raise KafkaConnectionError("down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if call in self.failures:
            future.set_exception(self.failures[call])
        else:
            self.delivered += batch.keys
            future.set_result(None)
        return future


def verdict(rid: str, metadata: dict[str, Any] | None = None) -> Verdict:
    return Verdict(
        rid, "allow", {"p": 0.1}, [], {"p": "1"}, {"name": "m", "version": "1"}, False, 1.0, metadata, SOURCE
    )


def sink(producer: FlakyProducer, grace_s: float = 5.0) -> KafkaSink:
    return KafkaSink(producer, KafkaSettings(outage_grace_s=grace_s), "test:1")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_module, "RETRY_BACKOFF_S", (0.01, 0.02))


async def test_failed_records_are_sent_again_and_only_they() -> None:
    producer = FlakyProducer(failures={0: NodeNotReadyError("down"), 2: KafkaConnectionError("down")})
    await sink(producer).deliver([verdict("a"), verdict("b"), verdict("c")], [])
    assert producer.calls == [b"a", b"b", b"c", b"a", b"c"]
    assert sorted(producer.delivered) == [b"a", b"b", b"c"]


async def test_a_send_that_raises_is_retried_with_the_rest_of_the_batch() -> None:
    producer = FlakyProducer(raise_on={1})
    await sink(producer).deliver([verdict("a"), verdict("b"), verdict("c")], [])
    assert producer.calls == [b"a", b"b", b"b", b"c"]  # "c" waits for the next attempt
    assert producer.delivered == [b"a", b"b", b"c"]


async def test_every_batch_is_closed_before_it_is_sent() -> None:
    producer = FlakyProducer(capacity=2, partitions=3)
    await sink(producer).deliver([verdict(f"v{i}") for i in range(7)], [])
    assert len(producer.sends) >= 4 and producer.sent_open == 0


async def test_gives_up_after_the_grace_period() -> None:
    producer = FlakyProducer(failures={i: NodeNotReadyError("down") for i in range(1000)})
    with pytest.raises(DeliveryFailed):
        await asyncio.wait_for(sink(producer, grace_s=0.1).deliver([verdict("a")], []), 5)
    assert 2 <= len(producer.calls) < 1000


async def test_a_partition_gets_its_records_in_batches_in_order() -> None:
    producer = FlakyProducer(capacity=3, partitions=3)
    keys = [f"r{i}" for i in range(20)]
    await sink(producer).deliver([verdict(k) for k in keys], [])
    partitioner = DefaultPartitioner()
    for partition in range(3):
        wanted = [k.encode() for k in keys if partitioner(k.encode(), [0, 1, 2], [0, 1, 2]) == partition]
        sent = [key for p, batch in producer.sends if p == partition for key in batch]
        assert sent == wanted, f"partition {partition}"
    assert len(producer.sends) < len(keys) and max(len(b) for _, b in producer.sends) == 3


async def test_a_permanent_error_fails_at_once() -> None:
    producer = FlakyProducer(failures={0: MessageSizeTooLargeError()})
    with pytest.raises(DeliveryFailed):
        await sink(producer).deliver([verdict("a")], [])
    assert producer.calls == [b"a"]


def test_a_verdict_too_large_to_produce_becomes_a_too_large_dead_letter() -> None:
    records = sink(FlakyProducer()).encode([verdict("big", {"blob": "m" * 950_000}), verdict("ok")], [])
    topics = [r.topic for r in records]
    assert topics == ["verdicts", "prompts.dlq"]
    letter = orjson.loads(records[1].value)
    assert letter["reason"] == "too_large" and letter["request_id"] == "big"
    assert all(len(r.value) <= MAX_OUTPUT_BYTES for r in records)


def test_a_dead_letter_keeps_only_a_prefix_of_a_huge_original() -> None:
    huge = RawRecord("prompts", 1, 9, b"key", b"x" * 3_000_000)
    letter = DeadLetter(Reason.TOO_LARGE, "value is 3000000 bytes", huge)
    (record,) = sink(FlakyProducer()).encode([], [letter])
    body = orjson.loads(record.value)
    assert len(record.value) <= MAX_OUTPUT_BYTES
    assert base64.b64decode(body["original"]["value_b64"]) == b"x" * sink_module.KEPT_ORIGINAL_BYTES
    assert "cut to its first" in body["detail"] and record.key == b"key"
