"""The agent: batches in from faust, the pipeline, acks out; and the drain of a graceful stop.

Delivery contract (at-least-once): the agent takes a batch with faust's `noack_take`, hands it
to the pipeline, and acks an event only after its verdict or dead letter, and those of every
event before it in its partition, are acknowledged by the broker (`worker.acks`). A batch's long
prompts are scored in the model's long lane and delivered after the rest of the batch, whose
events wait for theirs before they are acked. faust commits the acked offsets every
`commit_interval_s` (and on stop). So an offset is committed only after its verdict is
delivered; a crash re-reads, never skips. An event that is never acked (the agent cancelled
mid-batch) is simply read again. An unexpected error exits the process at once with status 70,
committing nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

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


def to_raw_record(event: Any) -> RawRecord:
    """A faust event as the pipeline's plain record."""
    message = event.message
    headers = tuple((str(name), bytes(value or b"")) for name, value in (message.headers or ()))
    timestamp = message.timestamp
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,  # raw serializer: the bytes as consumed
        headers=headers,
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
    )


class BatchAgent:
    """The agent body: batches in, pipeline, and a drain switch for graceful shutdown.

    Up to `pipeline_depth` batches are in flight at once, each in its own task: while the model
    scores one batch, the next is decoded, looked up in Redis and tokenized, and the one before
    is delivered. Delivery and acks stay in the order the batches were taken (each task waits
    for the one before it to deliver first), so offsets are acked in order and a crash re-reads
    every batch not yet delivered.
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
        self._acks: InOrderAcks[Any] = InOrderAcks(_partition_of)
        self._draining = False

    async def run(self, stream: Any) -> None:
        batching = self._settings.batching
        within = batching.max_wait_ms / 1000 or 0.001
        previous: asyncio.Task[None] | None = None
        async for events in stream.noack_take(batching.max_batch_requests, within=within):
            if self._draining:
                await _park()  # taken after the drain began: left un-acked, re-read later
            taken = list(events)
            self._acks.taken(taken)
            previous = asyncio.ensure_future(self._handle(stream, taken, previous))
            self._in_flight.add(previous)
            previous.add_done_callback(self._in_flight.discard)
            while len(self._in_flight) >= batching.pipeline_depth:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            while len(self._long_lane) >= LONG_LANE_BATCHES:
                await asyncio.wait(self._long_lane, return_when=asyncio.FIRST_COMPLETED)
            if self._draining:
                await _park()

    async def _handle(self, stream: Any, events: list[Any], previous: asyncio.Task[None] | None) -> None:
        """Score one batch, then (after the batch before it) deliver it and ack its events; its
        long prompts go on in the long lane."""
        started = time.perf_counter()
        try:
            records = [to_raw_record(e) for e in events]
            result = await self._pipeline.process(records, started)
            if previous is not None:
                await previous  # deliver in the order the batches were taken
            await self._pipeline.deliver(result, started)
            owed: list[Any] = []
            if result.long is not None:
                owed = _events_of(result.long, records, events)
                self._start_long_lane(stream, result.long, owed)
            await self._ack(stream, _without(events, owed))
        except asyncio.CancelledError:
            raise
        except Exception:  # an un-acked gap would stall commits: leave and be restarted
            log.critical("batch failed; exiting without committing it", exc_info=True)
            self._on_fatal()

    def _start_long_lane(self, stream: Any, work: LongWork, events: list[Any]) -> None:
        task = asyncio.ensure_future(self._handle_long(stream, work, events))
        self._long_lane.add(task)
        task.add_done_callback(self._long_lane.discard)

    async def _handle_long(self, stream: Any, work: LongWork, events: list[Any]) -> None:
        """Score, deliver and ack a batch's long prompts."""
        try:
            result = await self._pipeline.finish_long(work)
            await self._pipeline.deliver(result, work.started)
            await self._ack(stream, events)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical("long prompts failed; exiting without committing them", exc_info=True)
            self._on_fatal()

    async def _ack(self, stream: Any, delivered: list[Any]) -> None:
        for event in self._acks.delivered(delivered):
            await stream.ack(event)

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking batches and wait for those in flight; False if they did not finish in time."""
        self._draining = True
        self._health.set_ready(False)
        try:
            await asyncio.wait_for(self._wait_in_flight(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _wait_in_flight(self) -> None:
        while self._in_flight or self._long_lane:
            await asyncio.wait(self._in_flight | self._long_lane)


def _partition_of(event: Any) -> tuple[str, int]:
    message = event.message
    return message.topic, message.partition


def _events_of(work: LongWork, records: list[RawRecord], events: list[Any]) -> list[Any]:
    """The events whose verdicts `work` owes (a record is matched by identity, not by value)."""
    owed = {id(source) for source in work.sources}
    return [event for record, event in zip(records, events, strict=True) if id(record) in owed]


def _without(events: list[Any], owed: list[Any]) -> list[Any]:
    if not owed:
        return events
    left_out = {id(event) for event in owed}
    return [event for event in events if id(event) not in left_out]


async def _park() -> None:
    """Wait until faust cancels the agent on stop."""
    await asyncio.Event().wait()


def fatal_exit() -> None:
    """Leave now, with nothing more committed: Kubernetes restarts us and the batch is re-read."""
    logging.shutdown()
    os._exit(EXIT_FATAL)
