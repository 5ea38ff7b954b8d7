"""Start-up and shutdown of one worker process: settings -> model -> topics -> faust app -> agent.

The Kafka-facing modules are this one (the faust app and worker), `admin` (topics at start-up),
`agent` (batches in, acks out) and `sink` (verdicts and dead letters out); the private faust and
aiokafka APIs they need are all in `kafka_private`. SIGTERM / SIGINT: the worker stops taking
batches, lets the batch in hand finish and ack, commits, then lets faust stop: exit status 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Any

import faust

from models.base.contract import GuardModel
from models.serving import ModelSetupError, ServedModelBuilder, ServingOptions, load_served_model
from worker.admin import KafkaUnavailable, ensure_topics
from worker.agent import BatchAgent, fatal_exit
from worker.cache import NullScoreCache, RedisScoreCache, ScoreCache
from worker.config import Settings
from worker.health import Health, add_health_pages
from worker.kafka_private import SignalHookedWorker
from worker.kafka_security import broker_credentials
from worker.pipeline import Pipeline
from worker.reload import RegistryWatcher, describe, registry_fingerprint, show_registry
from worker.sink import DELIVERY_ATTEMPT_TIMEOUT_S, FaustSink

log = logging.getLogger(__name__)

#: Longest time SIGTERM waits for the batch in hand before giving up on it.
DRAIN_TIMEOUT_S = 60.0


def serving_options(settings: Settings) -> ServingOptions:
    """What the served model is made of, from the worker's settings."""
    model = settings.model
    return ServingOptions(
        model_path=model.path,
        guardformer_path=model.guardformer_path,
        policies_path=settings.policies.path,
        device=model.device,
        cache_dir=model.cache_dir,
        intra_op_threads=model.intra_op_threads,
        precision=model.precision,
    )


def load_guard_model(settings: Settings) -> GuardModel:
    """The model the worker serves (`models.serving`); `ModelSetupError` says what is wrong."""
    return load_served_model(serving_options(settings))


def make_cache(settings: Settings) -> ScoreCache:
    """Redis, or with the cache turned off a cache that holds nothing."""
    return RedisScoreCache(settings.redis) if settings.redis.enabled else NullScoreCache()


def run_worker(settings: Settings, builder: ServedModelBuilder | None = None) -> None:
    """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 70). Does not return.

    `builder` makes the served model (default: from the settings, as `serving_options` says).
    """
    builder = builder or ServedModelBuilder(serving_options(settings))
    path = settings.policies.path
    seen = registry_fingerprint(path) if path is not None else ""  # before reading it: no edit missed
    try:
        model = builder.reload()
    except ModelSetupError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from exc
    info = model.info
    log.info("model %s %s on %s, policies: %s", info.name, info.version, model.device, describe(info))
    try:
        created = _run_once(ensure_topics(settings.kafka))
    except KafkaUnavailable as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(1) from exc
    if created:
        log.info("created topics: %s", ", ".join(created))
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_app(settings)
    health = Health(details={"model": f"{info.name}:{info.version}", "device": model.device})
    add_health_pages(app, health)
    sink = FaustSink(app, settings.kafka, worker_id())
    pipeline = Pipeline(settings, model, make_cache(settings), sink)
    if path is not None and settings.policies.reload_seconds > 0:
        watcher = RegistryWatcher(builder.reload, pipeline, path, seen)
        app.timer(settings.policies.reload_seconds, name="guardstream.policy_reload")(watcher.check)
    else:
        show_registry(info)
    agent = BatchAgent(settings, pipeline, health)
    source = app.topic(
        settings.kafka.input_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
    app.agent(source, name="guardstream.score")(agent.run)
    worker = GracefulWorker(app, agent, health, DRAIN_TIMEOUT_S, loglevel=settings.log_level)
    worker.execute_from_commandline()


def _run_once(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


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


class GracefulWorker(SignalHookedWorker):
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

    def on_stop_signal(self, signum: signal.Signals) -> None:
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
        self.schedule_shutdown(signum)

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
