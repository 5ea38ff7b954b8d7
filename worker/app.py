"""Start-up and shutdown of one worker process: settings -> model -> topics -> consumer, agent, sink.

The Kafka-facing modules are this one (the process's lifecycle), `admin` (topics at start-up),
`consumer` (batches in, acked offsets committed), `agent` (the pipeline between them) and `sink`
(verdicts and dead letters out), on aiokafka; the private aiokafka APIs they need are in
`kafka_private`. SIGTERM / SIGINT: the worker stops taking batches, lets the batches in hand
finish and ack, commits, leaves the group and exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError

from models.base.contract import GuardModel
from models.serving import ModelSetupError, ServedModelBuilder, ServingOptions, load_served_model
from worker.admin import KafkaUnavailable, ensure_topics
from worker.agent import BatchAgent, fatal_exit
from worker.cache import NullScoreCache, RedisScoreCache, ScoreCache
from worker.config import Settings
from worker.consumer import KafkaSource
from worker.health import Health, start_health_server
from worker.heap import tune_collector
from worker.pipeline import Pipeline
from worker.reload import RegistryWatcher, describe, registry_fingerprint, show_registry
from worker.sink import KafkaSink, make_producer

log = logging.getLogger(__name__)

#: Longest time SIGTERM waits for the batches in hand before giving up on them.
DRAIN_TIMEOUT_S = 60.0
#: Longest time the last commit before stopping may take (the records are read again if it fails).
FINAL_COMMIT_TIMEOUT_S = 10.0


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
    tune_collector()  # the model and the libraries are loaded: what lives as long as the process
    raise SystemExit(asyncio.run(WorkerProcess(settings, builder, model, seen).run()))


class WorkerProcess:
    """One worker's tasks (the agent, periodic commits, registry reloads) and its graceful stop."""

    def __init__(self, settings: Settings, builder: ServedModelBuilder, model: GuardModel, seen: str) -> None:
        """`seen`: the fingerprint of the policy registry `model` was built from."""
        self._settings = settings
        self._builder = builder
        self._model = model
        self._seen = seen
        self._health = Health(
            details={"model": f"{model.info.name}:{model.info.version}", "device": model.device}
        )
        self._stop: asyncio.Future[signal.Signals] | None = None

    async def run(self) -> int:
        """The exit status: 0 after a graceful stop, 1 when Kafka or the web port is unavailable."""
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        kafka = self._settings.kafka
        client_id = worker_id()
        producer = make_producer(kafka, client_id)
        sink = KafkaSink(producer, kafka, client_id)
        pipeline = Pipeline(self._settings, self._model, make_cache(self._settings), sink)
        agent = BatchAgent(self._settings, pipeline, self._health)
        source = KafkaSource(kafka, client_id, agent.settle)
        try:
            created = await ensure_topics(kafka)
            await producer.start()
            web = await start_health_server(self._settings.web, self._health)
            await source.start()
        except (KafkaUnavailable, KafkaError, OSError) as exc:
            log.error("cannot start: %s", exc)
            await producer.stop()
            return 1
        if created:
            log.info("created topics: %s", ", ".join(created))
        await self._serve(agent, source, pipeline)
        await source.stop()
        await producer.stop()
        await web.cleanup()
        log.info("stopped")
        return 0

    async def _serve(self, agent: BatchAgent, source: KafkaSource, pipeline: Pipeline) -> None:
        """Consume until a stop signal, then drain; a task that ends before it exits the process (70)."""
        assert self._stop is not None  # noqa: S101 - set by `run`
        kafka = self._settings.kafka
        tasks = [
            asyncio.ensure_future(agent.run(source)),
            asyncio.ensure_future(_every(kafka.commit_interval_s, source.commit_or_warn)),
            *self._reload_task(pipeline),
        ]
        ready = asyncio.ensure_future(self._ready_once_joined(source))
        running: list[asyncio.Future[Any]] = [self._stop, *tasks]
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not self._stop.done():
            _fail_on_ended(tasks)
        await self._drain(agent, source, self._stop.result())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _ready_once_joined(self, source: KafkaSource) -> None:
        """Ready (`/health/ready` 200) once the worker is a member of its group."""
        await source.joined.wait()
        self._health.set_ready(True)
        kafka = self._settings.kafka
        log.info("consuming %s in group %s", kafka.input_topic, kafka.group_id)

    def _reload_task(self, pipeline: Pipeline) -> list[asyncio.Future[None]]:
        path = self._settings.policies.path
        every = self._settings.policies.reload_seconds
        if path is None or every <= 0:
            show_registry(self._model.info)
            return []
        watcher = RegistryWatcher(self._builder.reload, pipeline, path, self._seen)
        return [asyncio.ensure_future(_every(every, watcher.check))]

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(signum)

    async def _drain(self, agent: BatchAgent, source: KafkaSource, signum: signal.Signals) -> None:
        """Finish the batches in hand and commit them (or exit 70 if they hang)."""
        log.info("%s received: finishing the batches in hand", signum.name)
        if not await agent.drain(DRAIN_TIMEOUT_S):
            log.error("batch still running after %.0f s; exiting without committing it", DRAIN_TIMEOUT_S)
            fatal_exit()
        try:
            await asyncio.wait_for(source.commit(), FINAL_COMMIT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a failed commit only means records are read again
            log.warning("commit before stop failed (%r); uncommitted records will be read again", exc)


async def _every(seconds: float, call: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        await call()


def _fail_on_ended(tasks: list[asyncio.Future[None]]) -> None:
    """A task that should run until the stop ended: say why, and exit 70 with nothing more committed."""
    for task in tasks:
        if task.done():
            error = task.exception() if not task.cancelled() else None
            log.critical("worker task ended unexpectedly: %r", error, exc_info=error)
    fatal_exit()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
