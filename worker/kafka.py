"""Everything that speaks Kafka: topics, the faust app and agent, the verdict sink.

Delivery contract (at-least-once): the agent takes a batch with faust's `noack_take`, hands it
to the pipeline, and acks the batch's events only after every verdict and dead letter of it is
acknowledged by the broker. faust commits the acked offsets every `commit_interval_s` (and on
stop). So an offset is committed only after its verdict is delivered; a crash re-reads, never
skips. An event that is never acked (the agent cancelled mid-batch) is simply read again.

- SIGTERM / SIGINT: the worker stops taking batches, lets the batch in hand finish and ack,
  then lets faust stop, which commits. Exit status 0.
- an unexpected error: the process exits at once with status 70 and commits nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from worker import codec
from worker.config import KafkaSettings, Settings
from worker.health import Health
from worker.pipeline import Pipeline
from worker.schema import DeadLetter, RawRecord, Verdict

log = logging.getLogger(__name__)

EXIT_FATAL = 70


class KafkaUnavailable(Exception):
    """The brokers did not answer, or the topics the worker needs are missing."""


async def ensure_topics(kafka: KafkaSettings, connect_timeout_s: float = 60.0) -> list[str]:
    """Check the input, verdicts and dead-letter topics; create the missing ones if allowed."""
    admin = await _connected_admin(kafka.bootstrap_servers, connect_timeout_s)
    try:
        existing = set(await admin.list_topics())
        wanted = [kafka.input_topic, kafka.verdicts_topic, kafka.dlq_topic]
        missing = [name for name in wanted if name not in existing]
        if missing and not kafka.create_topics:
            hint = "create them, or set GUARDSTREAM_KAFKA__CREATE_TOPICS=true"
            raise KafkaUnavailable(f"missing topic(s) {', '.join(missing)}: {hint}")
        for name in missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was faster
                await admin.create_topics([NewTopic(name, kafka.partitions, kafka.replication_factor)])
        return missing
    finally:
        await admin.close()


async def _connected_admin(servers: str, timeout_s: float) -> AIOKafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id="guardstream-admin")
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            await admin.close()
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"no Kafka broker answered at {servers} within {timeout_s:.0f} s"
                ) from exc
            log.warning("Kafka at %s does not answer yet; retrying", servers)
            await asyncio.sleep(2.0)
        else:
            return admin


class FaustSink:
    """Produces verdicts and dead letters with the app's producer and waits for the acks."""

    def __init__(self, app: faust.App, kafka: KafkaSettings, worker_id: str) -> None:
        self._app = app
        self._kafka = kafka
        self._worker_id = worker_id

    async def deliver(self, verdicts: Sequence[Verdict], letters: Sequence[DeadLetter]) -> None:
        producer = self._app.producer
        pending = []
        for verdict in verdicts:
            key, value = codec.encode_verdict(verdict)
            pending.append(await producer.send(self._kafka.verdicts_topic, key, value, None, None, None))
        for letter in letters:
            letter_key, letter_value, headers = codec.encode_dead_letter(letter, self._worker_id)
            pending.append(
                await producer.send(self._kafka.dlq_topic, letter_key, letter_value, None, None, headers)
            )
        await asyncio.gather(*pending)


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


def build_app(settings: Settings) -> faust.App:
    """The faust app: raw-bytes topics, manual batching, memory store, our web port."""
    kafka = settings.kafka
    brokers = ";".join(f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(","))
    return faust.App(
        kafka.group_id,
        broker=brokers,
        store="memory://",
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.web.host,
        web_host=settings.web.host,
        web_port=settings.web.port,
        broker_commit_interval=kafka.commit_interval_s,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=min(3.0, kafka.session_timeout_s / 3),
        consumer_auto_offset_reset=kafka.auto_offset_reset,
        # Static membership (KIP-345) when set: faust hands it to aiokafka as group_instance_id.
        consumer_group_instance_id=kafka.group_instance_id,
        producer_acks=-1,
        # Do not wait for un-acked events on stop: a batch parked by the drain stays un-acked
        # (so uncommitted) on purpose and is read again by the next owner of its partition.
        stream_wait_empty=False,
        stream_buffer_maxsize=max(4 * settings.batching.max_batch_requests, 256),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
    )


class BatchAgent:
    """The agent body: batches in, pipeline, and a drain switch for graceful shutdown."""

    def __init__(self, settings: Settings, pipeline: Pipeline, health: Health) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._health = health
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    async def run(self, stream: Any) -> None:
        batching = self._settings.batching
        within = batching.max_wait_ms / 1000 or 0.001
        async for events in stream.noack_take(batching.max_batch_requests, within=within):
            if self._draining:
                await _park()  # taken after the drain began: left un-acked, re-read later
            self._idle.clear()
            try:
                await self._pipeline.handle([to_raw_record(e) for e in events])
                for event in events:
                    await stream.ack(event)
            except Exception:  # an un-acked gap would stall commits: leave and be restarted
                log.critical("batch failed; exiting without committing it", exc_info=True)
                fatal_exit()
            finally:
                self._idle.set()
            if self._draining:
                await _park()

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking batches and wait for the one in hand; False if it did not finish in time."""
        self._draining = True
        self._health.set_ready(False)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


async def _park() -> None:
    """Wait until faust cancels the agent on stop."""
    await asyncio.Event().wait()


def fatal_exit() -> None:
    """Leave now, with nothing more committed: Kubernetes restarts us and the batch is re-read."""
    logging.shutdown()
    os._exit(EXIT_FATAL)


class GracefulWorker(faust.Worker):
    """A faust worker whose SIGTERM finishes the batch in hand before faust stops."""

    def __init__(
        self, app: faust.App, agent: BatchAgent, health: Health, drain_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._agent = agent
        self._health = health
        self._drain_timeout_s = drain_timeout_s
        self._drain_task: asyncio.Future[None] | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._health.set_ready(True)

    def _on_sigterm(self) -> None:
        self._begin_drain(signal.SIGTERM)

    def _on_sigint(self) -> None:
        self._begin_drain(signal.SIGINT)

    def _begin_drain(self, signum: signal.Signals) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain_then_stop(signum), loop=self.loop)

    async def _drain_then_stop(self, signum: signal.Signals) -> None:
        log.info("%s received: finishing the batch in hand", signum.name)
        if not await self._agent.drain(self._drain_timeout_s):
            log.error(
                "batch still running after %.0f s; exiting without committing it",
                self._drain_timeout_s,
            )
            fatal_exit()
        await self._commit_acked()
        self._schedule_shutdown(signum)

    async def _commit_acked(self) -> None:
        """Commit every acked offset before faust stops.

        faust's own commit on stop returns without committing when a periodic commit is in
        flight (it only waits for that one, whose offsets may predate the last acks), so the
        records of the last batch would be read again by the next owner. The first call here may
        likewise only wait; the second then commits what is acked by now.
        """
        consumer = self.app.consumer
        for _ in range(2):
            try:
                await consumer.commit()
            except Exception:  # a failed commit only means records are read again: at-least-once
                log.warning(
                    "commit before stop failed; uncommitted records will be read again", exc_info=True
                )
                return


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
