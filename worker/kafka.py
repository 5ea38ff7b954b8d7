"""Everything that speaks Kafka: topics, the faust app and agent, the verdict sink.

Delivery contract (at-least-once): the agent takes a batch with faust's `noack_take`, hands it
to the pipeline, and acks the batch's events only after every verdict and dead letter of it is
acknowledged by the broker. faust commits the acked offsets every `commit_interval_s` (and on
stop). So an offset is committed only after its verdict is delivered; a crash re-reads, never
skips. An event that is never acked (the agent cancelled mid-batch) is simply read again.

- SIGTERM / SIGINT: the worker stops taking batches, lets the batch in hand finish and ack,
  then lets faust stop, which commits. Exit status 0.
- the brokers do not take the verdicts (an outage): the sink sends the missing ones again with
  backoff for up to `outage_grace_s`, the batch un-acked meanwhile; the consumer and producer
  reconnect by themselves once the brokers are back.
- an unexpected error, or an outage longer than `outage_grace_s`: the process exits at once with
  status 70 and commits nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerClosed,
    RecordTooLargeError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from faust.exceptions import ProducerSendError

from worker import codec
from worker.config import KafkaSettings, Settings
from worker.health import Health
from worker.kafka_security import aiokafka_auth, broker_credentials
from worker.pipeline import Pipeline
from worker.schema import DeadLetter, RawRecord, Reason, Verdict

log = logging.getLogger(__name__)

EXIT_FATAL = 70


class KafkaUnavailable(Exception):
    """The brokers did not answer, or the topics the worker needs are missing."""


async def ensure_topics(kafka: KafkaSettings, connect_timeout_s: float = 60.0) -> list[str]:
    """Check the input, verdicts and dead-letter topics; create the missing ones if allowed."""
    admin = await _connected_admin(kafka, connect_timeout_s)
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


async def _connected_admin(kafka: KafkaSettings, timeout_s: float) -> AIOKafkaAdminClient:
    servers = kafka.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=servers, client_id="guardstream-admin", **aiokafka_auth(kafka)
        )
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            await admin.close()
            refused = await _credentials_refused(kafka)
            if refused is not None:  # waiting cannot cure wrong credentials or an untrusted certificate
                raise KafkaUnavailable(_refusal_message(kafka, refused)) from refused
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"no Kafka broker answered at {servers} within {timeout_s:.0f} s"
                ) from exc
            log.warning("Kafka at %s does not answer yet; retrying", servers)
            await asyncio.sleep(2.0)
        else:
            return admin


#: Errors of a TLS handshake or SASL login: the brokers answer, but not to these credentials.
_CREDENTIAL_ERRORS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
    ssl.SSLError,
)
CREDENTIAL_CHECK_TIMEOUT_MS = 10_000


async def _credentials_refused(kafka: KafkaSettings) -> BaseException | None:
    """The TLS or SASL error a bootstrap server answers the worker's credentials with, if any.

    aiokafka's admin client reports any bootstrap failure as a bare KafkaConnectionError; one
    direct connection per server tells a refused login or certificate from a broker that is down.
    """
    auth = aiokafka_auth(kafka)
    for host, port, _ in collect_hosts(kafka.bootstrap_servers, randomize=False):
        try:
            conn = await create_conn(
                host,
                port,
                client_id="guardstream-admin",
                request_timeout_ms=CREDENTIAL_CHECK_TIMEOUT_MS,
                **auth,
            )
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            continue  # cut off mid-handshake (a broker going down), not refused
        except _CREDENTIAL_ERRORS as exc:
            return exc
        except (OSError, KafkaError, TimeoutError):
            continue  # down or unreachable: the caller retries
        conn.close()
    return None


def _refusal_message(kafka: KafkaSettings, exc: BaseException) -> str:
    """A one-line reason naming what to check (never the password)."""
    servers, protocol = kafka.bootstrap_servers, kafka.security_protocol
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with Kafka at {servers} ({protocol}) failed: {exc} "
            "(check ssl_cafile and the brokers' certificate)"
        )
    return (
        f"Kafka at {servers} refused the credentials of user {kafka.sasl_username!r} "
        f"({protocol}, {kafka.sasl_mechanism}): {exc}"
    )


#: Longest verdict or dead-letter value the sink produces: under faust's default
#: `producer_max_request_size` (1,000,000) and the broker's default `max.message.bytes`.
MAX_OUTPUT_BYTES = 900_000
#: Bytes of an oversized original value kept in its dead letter (the rest is cut off).
KEPT_ORIGINAL_BYTES = 64 * 1024
#: One delivery attempt gives up after this long (faust's default is 20 minutes), so that the
#: sink's own retries, bounded by `outage_grace_s`, decide how long an outage is waited out.
DELIVERY_ATTEMPT_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = (0.5, 10.0)  # first and longest pause between delivery attempts

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


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


class FaustSink:
    """Produces verdicts and dead letters with the app's producer and waits for the acks.

    A record the brokers do not take is sent again, with backoff, until `outage_grace_s` has
    passed since the first attempt; only then does `deliver` raise (and the agent exit). The
    records already acknowledged are not sent again.
    """

    def __init__(self, app: faust.App, kafka: KafkaSettings, worker_id: str) -> None:
        self._app = app
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

        Once a send itself fails (no metadata, a full buffer: each waits up to the attempt
        timeout), the rest of the records are left for the next attempt instead of each waiting
        in turn.
        """
        producer = self._app.producer
        futures: list[Awaitable[Any] | None] = []
        error: BaseException | None = None
        for record in records:
            if error is not None:
                futures.append(None)
                continue
            try:
                futures.append(
                    await producer.send(record.topic, record.key, record.value, None, None, record.headers)
                )
            except Exception as exc:  # noqa: BLE001 - kept and retried, or raised by deliver
                futures.append(None)
                error = _root_cause(exc)
        outcomes = await asyncio.gather(*(f for f in futures if f is not None), return_exceptions=True)
        results = iter(outcomes)
        failed = []
        for record, future in zip(records, futures, strict=True):
            outcome = None if future is None else next(results)
            if future is None or isinstance(outcome, BaseException):
                failed.append(record)
                if isinstance(outcome, BaseException):
                    error = _root_cause(outcome)
        return failed, error


def _root_cause(exc: BaseException) -> BaseException:
    """The Kafka error under faust's ProducerSendError wrapper."""
    return exc.__cause__ if isinstance(exc, ProducerSendError) and exc.__cause__ else exc


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
        broker_credentials=broker_credentials(kafka),
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
        producer_request_timeout=DELIVERY_ATTEMPT_TIMEOUT_S,
        # Do not wait for un-acked events on stop: a batch parked by the drain stays un-acked
        # (so uncommitted) on purpose and is read again by the next owner of its partition.
        stream_wait_empty=False,
        stream_buffer_maxsize=max(4 * settings.batching.max_batch_requests, 256),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
    )


class BatchAgent:
    """The agent body: batches in, pipeline, and a drain switch for graceful shutdown.

    Up to `pipeline_depth` batches are in flight at once, each in its own task: while the model
    scores one batch, the next is decoded, looked up in Redis and tokenized, and the one before
    is delivered. Delivery and acks stay in the order the batches were taken (each task waits
    for the one before it to deliver first), so offsets are acked in order and a crash re-reads
    every batch not yet delivered.
    """

    def __init__(self, settings: Settings, pipeline: Pipeline, health: Health) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._health = health
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
            fatal_exit()

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
