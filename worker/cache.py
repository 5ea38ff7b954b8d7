"""The score cache: repeat prompts are answered from Redis.

The key is a SHA-256 of the model name and version, the model's fingerprint (what else decides
its scores: its files, precision, window length and stride, calibration; `ModelInfo.fingerprint`),
the version of the model's policy set and the normalized text, so a new model, a model changed in
place or a changed policy never serves an old score. Thresholds are not in it: they decide the
verdict, which is computed from the scores every time, not the scores. The value
is the list of scores in the model's policy order; the prompt itself is never stored.

Redis trouble never fails a verdict: the batch is scored as if every prompt were a miss, the
error is counted and logged at most every few seconds, and Redis is left alone for a moment
before it is tried again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from models.base.contract import ModelInfo
from worker import metrics
from worker.config import RedisSettings
from worker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

Scores = list[float]


def policy_set_version(info: ModelInfo, columns: Sequence[int] | None = None) -> str:
    """A short hash of the policies' ids, versions and (when the model reads them) words: all of
    the model's, or those at `columns`."""
    chosen = info.policies if columns is None else [info.policies[c] for c in columns]
    spec = ";".join(f"{p.id}={p.version}" + (f"#{p.fingerprint}" if p.fingerprint else "") for p in chosen)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def cache_key(
    prefix: str, info: ModelInfo, normalized_text: str, columns: Sequence[int] | None = None
) -> str:
    """The Redis key under which the scores of `normalized_text` are kept: for all the model's
    policies, or (`columns`) for a request's subset of them, in that order."""
    digest = _key_head(info, None if columns is None else tuple(columns)).copy()
    digest.update(normalized_text.encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    return prefix + str(digest.hexdigest())


@functools.lru_cache(maxsize=256)
def _key_head(info: ModelInfo, columns: tuple[int, ...] | None) -> Any:
    """The key's hash fed with everything but the text: the same for every prompt of a model and
    policy set, so it is computed once and copied."""
    digest = hashlib.sha256()
    for part in (info.name, info.version, info.fingerprint, policy_set_version(info, columns)):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest


class ScoreCache(Protocol):
    async def get_many(self, keys: Sequence[str]) -> list[Scores | None]: ...

    async def put_many(self, entries: Sequence[tuple[str, Scores]]) -> None: ...

    async def close(self) -> None: ...


class NullScoreCache:
    """No cache (`--no-cache`, `redis.enabled=false`): keeps nothing, every lookup misses."""

    async def get_many(self, keys: Sequence[str]) -> list[Scores | None]:
        return [None] * len(keys)

    async def put_many(self, entries: Sequence[tuple[str, Scores]]) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryScoreCache:
    """A dict-backed cache for tests (it never forgets: not for a running worker)."""

    def __init__(self) -> None:
        self.data: dict[str, Scores] = {}

    async def get_many(self, keys: Sequence[str]) -> list[Scores | None]:
        return [self.data.get(k) for k in keys]

    async def put_many(self, entries: Sequence[tuple[str, Scores]]) -> None:
        self.data.update(entries)

    async def close(self) -> None:
        return None


class RedisScoreCache:
    """MGET for the whole batch, one pipelined SET EX for the new scores."""

    def __init__(self, settings: RedisSettings, pause_after_error_s: float = 1.0) -> None:
        timeout = settings.timeout_ms / 1000
        self._client = aioredis.from_url(
            settings.url.get_secret_value(),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # one immediate reconnect: a restarted Redis
        )
        self._ttl_s = settings.ttl_s
        self._pause_s = pause_after_error_s
        self._paused_until = 0.0
        self._warn = RateLimitedLog(log)

    async def get_many(self, keys: Sequence[str]) -> list[Scores | None]:
        if not keys or self._paused():
            return [None] * len(keys)
        try:
            raw = await self._client.mget(list(keys))
        except (RedisError, OSError) as exc:
            self._on_error("get", exc)
            return [None] * len(keys)
        return [None if value is None else _parse(value) for value in raw]

    async def put_many(self, entries: Sequence[tuple[str, Scores]]) -> None:
        if not entries or self._paused():
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                ttl = self._ttl_s
                for key, scores in entries:
                    # the command itself: `pipe.set` checks its keyword arguments on every call,
                    # a tenth of the event loop's time on the all-misses benchmark
                    pipe.execute_command("SET", key, orjson.dumps(scores), "EX", ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._on_error("put", exc)

    async def close(self) -> None:
        await self._client.aclose()

    def _paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def _on_error(self, operation: str, exc: Exception) -> None:
        metrics.CACHE_ERRORS.labels(operation=operation).inc()
        self._paused_until = time.monotonic() + self._pause_s
        self._warn.warning("Redis %s failed, scoring without the cache: %r", operation, exc)


def _parse(value: bytes | str) -> Scores | None:
    try:
        scores = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(scores, list) or not all(isinstance(s, float | int) for s in scores):
        return None
    return [float(s) for s in scores]
