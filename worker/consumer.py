"""The consumer side of the worker: batches of raw records in, acked offsets committed.

`KafkaSource` owns the worker's aiokafka consumer (one member of the consumer group, auto-commit
off). `batches` takes up to `max_records` records, waiting up to `within_s` for a batch to fill
once its first record is in, as plain `RawRecord`s; the wait ends early once `go_now()` says the
model would otherwise sit idle. `ack` marks records whose verdicts (and those of every record
before them in their partition) are delivered; `commit` commits the acked offsets, every
`commit_interval_s` and before the worker stops. Only acked offsets are ever committed: a crash
re-reads, never skips.

When the group takes partitions away (another worker joins or leaves), `settle` (the agent's
wait for the batches in flight) runs before they go, then the acked offsets are committed, so
the next owner starts after the last delivered verdict. A batch that does not settle in time is
read again by the next owner: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from worker.config import KafkaSettings
from worker.kafka_security import aiokafka_auth
from worker.schema import RawRecord

log = logging.getLogger(__name__)

#: How long one empty poll waits before polling again (a stop cancels it at once).
POLL_MS = 1000
#: While a batch fills, how often `go_now` is asked whether to stop waiting.
FILL_CHECK_MS = 2

Partition = tuple[str, int]


def _never() -> bool:
    return False


def consumer_options(kafka: KafkaSettings, client_id: str) -> dict[str, Any]:
    """The consumer's arguments: one member of the group (static when `group_instance_id` is set),
    offsets committed by the worker only."""
    return {
        "bootstrap_servers": kafka.bootstrap_servers,
        "group_id": kafka.group_id,
        "group_instance_id": kafka.group_instance_id,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "session_timeout_ms": int(kafka.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(min(3.0, kafka.session_timeout_s / 3) * 1000),
        **aiokafka_auth(kafka),
    }


class KafkaSource:
    """The worker's consumer: `batches` in, `ack` and `commit` out."""

    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        settle: Callable[[float], Awaitable[bool]],
        consumer: Any = None,
    ) -> None:
        """`settle(timeout_s)`: waits for the batches in flight, False if they did not finish;
        `consumer`: an aiokafka consumer to use (default: one made from `consumer_options`)."""
        self._kafka = kafka
        self._settle = settle
        self._consumer = consumer or AIOKafkaConsumer(**consumer_options(kafka, client_id))
        self._acked: dict[Partition, int] = {}  # next offset to read, per partition, once delivered
        self._committed: dict[Partition, int] = {}
        #: set once the worker has joined its group (its first assignment, even an empty one)
        self.joined = asyncio.Event()

    async def start(self) -> None:
        """Connect and join the group (partitions are assigned on the first poll)."""
        await self._consumer.start()
        self._consumer.subscribe([self._kafka.input_topic], listener=_Rebalance(self))

    async def stop(self) -> None:
        """Leave the group (a static member stays in it for `session_timeout_s`) and disconnect."""
        await self._consumer.stop()

    async def batches(
        self, max_records: int, within_s: float, go_now: Callable[[], bool] = _never
    ) -> AsyncIterator[list[RawRecord]]:
        """Batches of up to `max_records`: the first record, then what comes within `within_s`,
        or until `go_now()` (checked every FILL_CHECK_MS) says to take what is in hand."""
        consumer = self._consumer
        loop = asyncio.get_running_loop()
        while True:
            fetched = await consumer.getmany(timeout_ms=POLL_MS, max_records=max_records)
            if not fetched:
                continue
            batch = _raw_records(fetched.values())
            deadline = loop.time() + within_s
            while len(batch) < max_records and not go_now() and (left := deadline - loop.time()) > 0:
                more = await consumer.getmany(
                    timeout_ms=max(1, int(min(left * 1000, FILL_CHECK_MS))),
                    max_records=max_records - len(batch),
                )
                batch += _raw_records(more.values())
            yield batch

    def ack(self, records: Iterable[RawRecord]) -> None:
        """Records now safe to commit, each after every record before it in its partition."""
        acked = self._acked
        for record in records:
            acked[(record.topic, record.partition)] = record.offset + 1

    def acked(self) -> dict[Partition, int]:
        """The next offset to read of each partition that has acked records."""
        return dict(self._acked)

    async def commit(self) -> None:
        """Commit the offsets acked since the last commit (raises what the broker answers).

        Offsets of partitions this worker no longer holds (a batch that finished after its
        partitions moved) are dropped: their next owner reads those records again."""
        assigned = self._consumer.assignment()
        for partition in [p for p in self._acked if TopicPartition(*p) not in assigned]:
            del self._acked[partition]
            self._committed.pop(partition, None)
        offsets = {
            TopicPartition(*partition): offset
            for partition, offset in self._acked.items()
            if self._committed.get(partition) != offset
        }
        if not offsets:
            return
        await self._consumer.commit(offsets)
        for tp, offset in offsets.items():
            self._committed[(tp.topic, tp.partition)] = offset

    async def commit_or_warn(self) -> bool:
        """`commit`, logging a failure instead of raising it (records are then read again)."""
        try:
            await self.commit()
        except Exception as exc:  # noqa: BLE001 - a failed commit only means records are read again
            log.warning("commit failed (%r); uncommitted records will be read again", exc)
            return False
        return True

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        if not await self._settle(self._kafka.session_timeout_s):
            log.warning("batches still in flight as partitions move; their records will be read again")
        await self.commit_or_warn()
        for tp in revoked:
            self._acked.pop((tp.topic, tp.partition), None)
            self._committed.pop((tp.topic, tp.partition), None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", _describe(assigned))
        self.joined.set()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._source._on_assigned(assigned)


def _raw_records(fetched: Iterable[list[Any]]) -> list[RawRecord]:
    """aiokafka's records as the pipeline's, in fetch order within each partition."""
    return [
        RawRecord(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            _headers(message.headers) if message.headers else (),
            message.timestamp,
        )
        for records in fetched
        for message in records
    ]


def _headers(headers: Iterable[tuple[str, bytes | None]]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, value or b"") for name, value in headers)


def _describe(partitions: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"
