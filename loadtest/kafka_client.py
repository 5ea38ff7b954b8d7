"""A client of the worker's contract: publish prompts, collect verdicts and dead letters.

Used by `guardstream demo`, the integration tests and the load generator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


@dataclass
class Collected:
    """What came back, by request id (dead letters without an id are kept by source offset)."""

    verdicts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    letters: list[dict[str, Any]] = field(default_factory=list)

    def add_verdict(self, body: dict[str, Any]) -> None:
        self.verdicts.setdefault(body["id"], []).append(body)

    def latest(self, request_id: str) -> dict[str, Any]:
        return self.verdicts[request_id][-1]


async def publish(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    keys: Iterable[bytes | None] | None = None,
    max_request_size: int = 1_048_576,
) -> int:
    """Send raw values and wait until the broker has them all (`max_request_size`: largest record)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=max_request_size
    )
    await producer.start()
    try:
        futures = []
        key_list = list(keys) if keys is not None else None
        for index, value in enumerate(values):
            key = key_list[index] if key_list is not None else None
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


def prompt(request_id: str, text: str, **extra: Any) -> bytes:
    """One input record's value."""
    return orjson.dumps({"id": request_id, "text": text, **extra})


class Collector:
    """Reads the verdicts and dead-letter topics from their current ends onwards."""

    def __init__(self, bootstrap: str, verdicts_topic: str, dlq_topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            verdicts_topic, dlq_topic, bootstrap_servers=bootstrap, enable_auto_commit=False
        )
        self._verdicts_topic = verdicts_topic
        self._dlq_topic = dlq_topic
        self.collected = Collected()

    async def start(self, timeout_s: float = 30.0) -> None:
        """Subscribe (no group: every partition), then skip what is already there."""
        await self._consumer.start()
        topics = {self._verdicts_topic, self._dlq_topic}
        deadline = time.monotonic() + timeout_s
        while {tp.topic for tp in self._consumer.assignment()} != topics:
            if time.monotonic() > deadline:
                await self._consumer.stop()
                raise TimeoutError(f"no partitions of {sorted(topics)} assigned: do the topics exist?")
            await asyncio.sleep(0.1)
        partitions = sorted(self._consumer.assignment())
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        for tp, records in batches.items():
            for record in records:
                self.on_record(tp.topic == self._verdicts_topic, record)

    def on_record(self, is_verdict: bool, record: Any) -> None:
        """Keep one consumed verdict or dead letter (subclasses may account for it instead)."""
        body = orjson.loads(record.value)
        if is_verdict:
            self.collected.add_verdict(body)
        else:
            self.collected.letters.append(body)

    async def wait_for(self, verdict_ids: set[str], n_letters: int, timeout_s: float) -> bool:
        """Poll until every id has a verdict and `n_letters` dead letters came; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self.poll()
            if verdict_ids <= self.collected.verdicts.keys() and len(self.collected.letters) >= n_letters:
                return True
        return False
