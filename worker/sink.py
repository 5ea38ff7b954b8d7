"""The verdict sink: produces verdicts and dead letters with the worker's producer, waits for the acks.

A batch's records go out in producer batches, one per partition (`send_batch`), not one `send`
per record: the key picks the partition as the producer's own partitioner would. Each producer
batch is closed once filled, so it leaves at once instead of lingering for records that will
never join it. A batch the brokers do not take (an outage, a leader move) is sent again with
backoff for up to `outage_grace_s`; only then does delivery fail (and the agent exit, nothing
more committed). A verdict too large to publish becomes a smaller `too_large` dead letter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    ProducerClosed,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from aiokafka.partitioner import DefaultPartitioner

from worker import codec
from worker.config import KafkaSettings
from worker.kafka_security import aiokafka_auth
from worker.schema import DeadLetter, Reason, Verdict

log = logging.getLogger(__name__)


#: Longest verdict or dead-letter value the sink produces: under the producer's
#: `max_request_size` (MAX_REQUEST_BYTES) and the broker's default `max.message.bytes`.
MAX_OUTPUT_BYTES = 900_000
MAX_REQUEST_BYTES = 1_000_000
#: Bytes of one producer batch (one partition, one request): a thousand verdicts leave in a few
#: batches. A record larger than this goes in a batch of its own.
BATCH_BYTES = 256 * 1024
#: Bytes of an oversized original value kept in its dead letter (the rest is cut off).
KEPT_ORIGINAL_BYTES = 64 * 1024
#: One delivery attempt gives up after this long, so that the sink's own retries, bounded by
#: `outage_grace_s`, decide how long an outage is waited out.
DELIVERY_ATTEMPT_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = (0.5, 10.0)  # first and longest pause between delivery attempts
#: How long the producer lets a batch fill before sending it. The sink closes each batch it
#: fills, which sends it at once; this bounds only records the producer batches itself.
LINGER_MS = 5

#: Errors that waiting cannot cure: delivery fails at once instead of retrying.
_PERMANENT_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    ProducerClosed,
)


class DeliveryFailed(Exception):
    """Some verdicts or dead letters of a batch could not be delivered."""


@dataclass(slots=True)
class PartitionBatch:
    """Records bound for one partition, in a producer batch."""

    topic: str
    partition: int
    builder: Any
    records: list[Outgoing]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


def make_producer(kafka: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    """The worker's producer: every in-sync replica acknowledges (acks=all), one attempt is bounded."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=client_id,
        acks="all",
        linger_ms=LINGER_MS,
        max_batch_size=BATCH_BYTES,
        request_timeout_ms=int(DELIVERY_ATTEMPT_TIMEOUT_S * 1000),
        max_request_size=MAX_REQUEST_BYTES,
        **aiokafka_auth(kafka),
    )


class KafkaSink:
    """Produces verdicts and dead letters with the worker's producer and waits for the acks.

    A producer batch the brokers do not take is sent again, with backoff, until `outage_grace_s`
    has passed since the first attempt; only then does `deliver` raise (and the agent exit).
    The batches already acknowledged are not sent again.
    """

    def __init__(self, producer: Any, kafka: KafkaSettings, worker_id: str) -> None:
        """`producer`: started, an `AIOKafkaProducer` (`make_producer`) or one with its
        `partitions_for`, `create_batch` and `send_batch`."""
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self._kafka = kafka
        self._worker_id = worker_id

    async def deliver(self, verdicts: Sequence[Verdict], letters: Sequence[DeadLetter]) -> None:
        pending = self.encode(verdicts, letters)
        deadline = time.monotonic() + self._kafka.outage_grace_s
        pause, longest = RETRY_BACKOFF_S
        while True:
            pending, error = await self._send(pending)
            if not pending:
                return
            if isinstance(error, _PERMANENT_ERRORS) or time.monotonic() + pause > deadline:
                raise DeliveryFailed(f"{len(pending)} record(s) not delivered: {error!r}") from error
            log.warning(
                "%d record(s) not delivered (%r); retrying in %.1f s, for up to %.0f s more",
                len(pending),
                error,
                pause,
                deadline - time.monotonic(),
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)

    def encode(self, verdicts: Sequence[Verdict], letters: Sequence[DeadLetter]) -> list[Outgoing]:
        """The records to produce; a verdict too large to produce becomes a dead letter."""
        out = []
        oversized = []
        for verdict in verdicts:
            key, value = codec.encode_verdict(verdict)
            if len(value) > MAX_OUTPUT_BYTES:
                oversized.append(_oversized_verdict(verdict, len(value)))
                continue
            out.append(Outgoing(self._kafka.verdicts_topic, key, value))
        for letter in [*letters, *oversized]:
            letter_key, letter_value, headers = self._encode_letter(letter)
            out.append(Outgoing(self._kafka.dlq_topic, letter_key, letter_value, headers))
        return out

    def _encode_letter(self, letter: DeadLetter) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        encoded = codec.encode_dead_letter(letter, self._worker_id)
        if len(encoded[1]) <= MAX_OUTPUT_BYTES:
            return encoded
        return codec.encode_dead_letter(_with_short_original(letter), self._worker_id)

    async def _send(self, records: list[Outgoing]) -> tuple[list[Outgoing], BaseException | None]:
        """Send every record and wait for the acks: the records that failed, and one error.

        Once a batch's send itself fails (no metadata, a full buffer: each waits up to the attempt
        timeout), the remaining batches are left for the next attempt instead of each waiting in
        turn.
        """
        try:
            batches = await self._batches(records)
        except Exception as exc:  # noqa: BLE001 - no metadata yet: everything waits for the next attempt
            return records, exc
        futures: list[Awaitable[Any] | None] = []
        error: BaseException | None = None
        for batch in batches:
            if error is not None:
                futures.append(None)
                continue
            try:
                futures.append(
                    await self._producer.send_batch(batch.builder, batch.topic, partition=batch.partition)
                )
            except Exception as exc:  # noqa: BLE001 - kept and retried, or raised by deliver
                futures.append(None)
                error = exc
        outcomes = await asyncio.gather(*(f for f in futures if f is not None), return_exceptions=True)
        results = iter(outcomes)
        failed = []
        for batch, future in zip(batches, futures, strict=True):
            outcome = None if future is None else next(results)
            if future is None or isinstance(outcome, BaseException):
                failed += batch.records
                if isinstance(outcome, BaseException):
                    error = outcome
        return failed, error

    async def _batches(self, records: list[Outgoing]) -> list[PartitionBatch]:
        """`records` in producer batches of one partition each, in their order within a partition."""
        producer = self._producer
        partitions: dict[str, list[int]] = {}
        filling: dict[tuple[str, int], PartitionBatch] = {}
        full: list[PartitionBatch] = []
        for record in records:
            if record.topic not in partitions:
                partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
            every = partitions[record.topic]
            partition = self._partitioner(record.key, every, every)
            batch = filling.get((record.topic, partition))
            if batch is None or not _append(batch, record):
                if batch is not None:
                    full.append(batch)
                batch = PartitionBatch(record.topic, partition, producer.create_batch(), [])
                filling[(record.topic, partition)] = batch
                _append(batch, record)  # an empty batch takes a record of any size
        batches = full + list(filling.values())
        for batch in batches:
            batch.builder.close()  # a closed batch is sent at once: no linger after a whole batch
        return batches


def _append(batch: PartitionBatch, record: Outgoing) -> bool:
    """Add `record` to `batch`; False when the batch is full."""
    headers = record.headers or []
    if batch.builder.append(timestamp=None, key=record.key, value=record.value, headers=headers) is None:
        return False
    batch.records.append(record)
    return True


def _oversized_verdict(verdict: Verdict, size: int) -> DeadLetter:
    detail = (
        f"the verdict would be {size} bytes, over the {MAX_OUTPUT_BYTES}-byte limit of an output record "
        "(is `metadata` too large?)"
    )
    return DeadLetter(Reason.TOO_LARGE, detail, verdict.source, verdict.id)


def _with_short_original(letter: DeadLetter) -> DeadLetter:
    """The dead letter with its original value cut to KEPT_ORIGINAL_BYTES, and a note saying so."""
    value = letter.source.value or b""
    source = dataclasses.replace(letter.source, value=value[:KEPT_ORIGINAL_BYTES])
    note = f" [original value cut to its first {KEPT_ORIGINAL_BYTES} of {len(value)} bytes]"
    return dataclasses.replace(letter, source=source, detail=letter.detail + note)
