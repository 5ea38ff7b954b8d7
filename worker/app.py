"""Start-up and shutdown of one worker process: settings -> model -> topics -> faust."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from models.base.contract import GuardModel
from models.serving import ModelSetupError, ServingOptions, load_served_model
from worker import kafka
from worker.cache import NullScoreCache, RedisScoreCache, ScoreCache
from worker.config import Settings
from worker.health import Health, add_health_pages
from worker.pipeline import Pipeline

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


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 70). Does not return."""
    try:
        model = load_guard_model(settings)
    except ModelSetupError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from exc
    info = model.info
    log.info(
        "model %s %s on %s, policies: %s",
        info.name,
        info.version,
        model.device,
        ", ".join(f"{p.id}@{p.version}>={p.threshold:.3f}" for p in info.policies),
    )
    try:
        created = _run_once(kafka.ensure_topics(settings.kafka))
    except kafka.KafkaUnavailable as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(1) from exc
    if created:
        log.info("created topics: %s", ", ".join(created))
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = kafka.build_app(settings)
    health = Health(details={"model": f"{info.name}:{info.version}", "device": model.device})
    add_health_pages(app, health)
    sink = kafka.FaustSink(app, settings.kafka, kafka.worker_id())
    pipeline = Pipeline(settings, model, make_cache(settings), sink)
    agent = kafka.BatchAgent(settings, pipeline, health)
    source = app.topic(
        settings.kafka.input_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
    app.agent(source, name="guardstream.score")(agent.run)
    worker = kafka.GracefulWorker(app, agent, health, DRAIN_TIMEOUT_S, loglevel=settings.log_level)
    worker.execute_from_commandline()


def _run_once(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
