"""The agent: batches in from the source, the pipeline, acks out; and the drain of a graceful stop.

Delivery contract (at-least-once): the agent takes a batch from the source (`worker.consumer`),
hands it to the pipeline, and acks a record only after its verdict or dead letter, and those of
every record before it in its partition, are acknowledged by the broker (`worker.acks`). A
batch's long prompts are scored in the model's long lane and delivered after the rest of the
batch, whose records wait for theirs before they are acked. The source commits the acked
offsets every `commit_interval_s` (and on stop). So an offset is committed only after its
verdict is delivered; a crash re-reads, never skips. A record that is never acked (the agent
cancelled mid-batch) is simply read again. An unexpected error exits the process at once with
status 70, committing nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Protocol

from worker.acks import InOrderAcks
from worker.config import Settings
from worker.health import Health
from worker.pipeline import LongWork, Pipeline
from worker.schema import RawRecord

log = logging.getLogger(__name__)

EXIT_FATAL = 70
#: Most batches whose long prompts may be in the long lane at once; past that, no batch is taken
#: until one finishes (the long lane's backlog and the records held un-acked stay bounded).
LONG_LANE_BATCHES = 8


class Source(Protocol):
    """Where batches come from and acks go (`worker.consumer.KafkaSource`)."""

    def batches(
        self, max_records: int, within_s: float, go_now: Callable[[], bool]
    ) -> AsyncIterator[list[RawRecord]]: ...

    def ack(self, records: Iterable[RawRecord]) -> None: ...


class BatchAgent:
    """The agent body: batches in, pipeline, and a drain switch for graceful shutdown.

    Up to `pipeline_depth` batches are in flight at once, each in its own task: while the model
    scores one batch, the next is decoded, looked up in Redis and tokenized, and the one before
    is delivered. Delivery and acks stay in the order the batches were taken (each task waits
    for the one before it to deliver first), so offsets are acked in order and a crash re-reads
    every batch not yet delivered.

    A batch fills for up to `max_wait_ms` only while another batch is being prepared or scored:
    once none is, the model would wait for this one, so it goes with what has arrived. At thin
    traffic a prompt waits for no timer; under load, batches grow while the model is busy.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        health: Health,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._health = health
        #: what a failed batch does: leave at once (tests pass their own)
        self._on_fatal = on_fatal or fatal_exit
        self._in_flight: set[asyncio.Task[None]] = set()
        self._long_lane: set[asyncio.Task[None]] = set()
        self._acks: InOrderAcks[RawRecord] = InOrderAcks(_partition_of)
        self._draining = False
        self._scoring = 0  # batches taken whose short prompts are not scored yet

    async def run(self, source: Source) -> None:
        """Take batches from `source` until cancelled (after a drain, no batch is handled)."""
        batching = self._settings.batching
        within = batching.max_wait_ms / 1000 or 0.001
        previous: asyncio.Task[None] | None = None
        async for batch in source.batches(batching.max_batch_requests, within, self._model_would_wait):
            if self._draining:
                await _park()  # taken after the drain began: left un-acked, re-read later
            self._acks.taken(batch)
            previous = asyncio.ensure_future(self._handle(source, batch, previous))
            self._in_flight.add(previous)
            previous.add_done_callback(self._in_flight.discard)
            while len(self._in_flight) >= batching.pipeline_depth:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            while len(self._long_lane) >= LONG_LANE_BATCHES:
                await asyncio.wait(self._long_lane, return_when=asyncio.FIRST_COMPLETED)
            if self._draining:
                await _park()

    async def _handle(
        self, source: Source, records: list[RawRecord], previous: asyncio.Task[None] | None
    ) -> None:
        """Score one batch, then (after the batch before it) deliver it and ack its records; its
        long prompts go on in the long lane."""
        started = time.perf_counter()
        try:
            self._scoring += 1
            try:
                result = await self._pipeline.process(records, started)
            finally:
                self._scoring -= 1
            if previous is not None:
                await previous  # deliver in the order the batches were taken
            await self._pipeline.deliver(result, started)
            owed: list[RawRecord] = []
            if result.long is not None:
                owed = result.long.sources
                self._start_long_lane(source, result.long)
            source.ack(self._acks.delivered(_without(records, owed)))
        except asyncio.CancelledError:
            raise
        except Exception:  # an un-acked gap would stall commits: leave and be restarted
            log.critical("batch failed; exiting without committing it", exc_info=True)
            self._on_fatal()

    def _model_would_wait(self) -> bool:
        """True when no batch is being prepared or scored: the one filling should go now."""
        return self._scoring == 0

    def _start_long_lane(self, source: Source, work: LongWork) -> None:
        task = asyncio.ensure_future(self._handle_long(source, work))
        self._long_lane.add(task)
        task.add_done_callback(self._long_lane.discard)

    async def _handle_long(self, source: Source, work: LongWork) -> None:
        """Score, deliver and ack a batch's long prompts."""
        try:
            result = await self._pipeline.finish_long(work)
            await self._pipeline.deliver(result, work.started)
            source.ack(self._acks.delivered(work.sources))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical("long prompts failed; exiting without committing them", exc_info=True)
            self._on_fatal()

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking batches and wait for those in flight; False if they did not finish in time."""
        self._draining = True
        self._health.set_ready(False)
        return await self.settle(timeout_s)

    async def settle(self, timeout_s: float) -> bool:
        """Wait for the batches in flight (taking more meanwhile); False if they did not finish in time."""
        try:
            await asyncio.wait_for(self._wait_in_flight(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _wait_in_flight(self) -> None:
        while self._in_flight or self._long_lane:
            await asyncio.wait(self._in_flight | self._long_lane)


def _partition_of(record: RawRecord) -> tuple[str, int]:
    return record.topic, record.partition


def _without(records: list[RawRecord], owed: list[RawRecord]) -> list[RawRecord]:
    """`records` but those in `owed` (matched by identity, not by value)."""
    if not owed:
        return records
    left_out = {id(record) for record in owed}
    return [record for record in records if id(record) not in left_out]


async def _park() -> None:
    """Wait until the worker cancels the agent on stop."""
    await asyncio.Event().wait()


def fatal_exit() -> None:
    """Leave now, with nothing more committed: Kubernetes restarts us and the batch is re-read."""
    logging.shutdown()
    os._exit(EXIT_FATAL)
