"""Start-up and shutdown of one worker process: settings -> model -> topics -> faust."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.base.contract import GuardModel
from worker import kafka
from worker.cache import NullScoreCache, RedisScoreCache, ScoreCache
from worker.config import Settings
from worker.health import Health, add_health_pages
from worker.pipeline import Pipeline

if TYPE_CHECKING:
    from models.policies import PolicySet

log = logging.getLogger(__name__)

#: Longest time SIGTERM waits for the batch in hand before giving up on it.
DRAIN_TIMEOUT_S = 60.0


class ModelSetupError(Exception):
    """The model, the GuardFormer or the policy registry cannot be used: the message says why."""


def load_guard_model(settings: Settings) -> GuardModel:
    """The model the worker serves: the model directory alone, or routed over the policy registry.

    Without a registry (`policies.path`) and without a GuardFormer, the model scores its own
    policies. Otherwise every enabled policy of the registry (the starter set by default) is
    scored by the model at `model.path` when it knows it, else by the GuardFormer.
    """
    from models.embedder.config import ModelDirectoryError
    from models.guardformer.guard import GuardFormerGuard
    from models.policies import DEFAULT_POLICY_DIR, PolicyError, PolicySet, load_policies
    from models.serving.routing import PolicyRoutingError, route_policies

    model_settings, registry_path = settings.model, settings.policies.path
    try:
        registry = load_policies(registry_path) if registry_path is not None else None
        base = _load(settings, model_settings.path, registry)
        if isinstance(base, GuardFormerGuard):  # it reads the registry's policies itself
            return base
        if registry is None and model_settings.guardformer_path is None:
            return base
        registry = registry if registry is not None else load_policies(DEFAULT_POLICY_DIR)
        if set(base.info.policy_ids) >= set(registry.enabled().ids):
            return route_policies(base, registry)
        known = set(base.info.policy_ids)
        rest = PolicySet(tuple(p for p in registry.enabled() if p.id not in known))
        guardformer = None
        if model_settings.guardformer_path is not None:
            guardformer = _load(settings, model_settings.guardformer_path, rest)
        return route_policies(base, registry, guardformer)
    except (ModelDirectoryError, PolicyError, PolicyRoutingError) as exc:
        raise ModelSetupError(str(exc)) from exc


def _load(settings: Settings, path: Path, policies: PolicySet | None) -> GuardModel:
    from models.serving.loader import load_model

    model_settings = settings.model
    return load_model(
        path,
        device=model_settings.device,
        cache_dir=model_settings.cache_dir,
        intra_op_threads=model_settings.intra_op_threads,
        precision=model_settings.precision,
        policies=policies,
    )


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
