"""The agent: batches in from faust, the pipeline, acks out; and the drain of a graceful stop.

Delivery contract (at-least-once): the agent takes a batch with faust's `noack_take`, hands it
to the pipeline, and acks the batch's events only after every verdict and dead letter of it is
acknowledged by the broker. faust commits the acked offsets every `commit_interval_s` (and on
stop). So an offset is committed only after its verdict is delivered; a crash re-reads, never
skips. An event that is never acked (the agent cancelled mid-batch) is simply read again. An
unexpected error exits the process at once with status 70, committing nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from worker.config import Settings
from worker.health import Health
from worker.pipeline import Pipeline
from worker.schema import RawRecord

log = logging.getLogger(__name__)

EXIT_FATAL = 70


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
        self._draining = False

    async def run(self, stream: Any) -> None:
        batching = self._settings.batching
        within = batching.max_wait_ms / 1000 or 0.001
        previous: asyncio.Task[None] | None = None
        async for events in stream.noack_take(batching.max_batch_requests, within=within):
            if self._draining:
                await _park()  # taken after the drain began: left un-acked, re-read later
            previous = asyncio.ensure_future(self._handle(stream, list(events), previous))
            self._in_flight.add(previous)
            previous.add_done_callback(self._in_flight.discard)
            while len(self._in_flight) >= batching.pipeline_depth:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            if self._draining:
                await _park()

    async def _handle(self, stream: Any, events: list[Any], previous: asyncio.Task[None] | None) -> None:
        """Score one batch, then (after the batch before it) deliver it and ack its events."""
        started = time.perf_counter()
        try:
            result = await self._pipeline.process([to_raw_record(e) for e in events], started)
            if previous is not None:
                await previous  # deliver and ack in the order the batches were taken
            await self._pipeline.deliver(result, started)
            for event in events:
                await stream.ack(event)
        except asyncio.CancelledError:
            raise
        except Exception:  # an un-acked gap would stall commits: leave and be restarted
            log.critical("batch failed; exiting without committing it", exc_info=True)
            self._on_fatal()

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
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))


async def _park() -> None:
    """Wait until faust cancels the agent on stop."""
    await asyncio.Event().wait()


def fatal_exit() -> None:
    """Leave now, with nothing more committed: Kubernetes restarts us and the batch is re-read."""
    logging.shutdown()
    os._exit(EXIT_FATAL)
