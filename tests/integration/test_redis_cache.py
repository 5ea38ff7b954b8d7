"""RedisScoreCache against the real Redis, and against no Redis at all."""

from __future__ import annotations

import time

import pytest
import redis

from tests.integration.conftest import REDIS_URL, free_port
from worker import metrics
from worker.cache import RedisScoreCache
from worker.config import RedisSettings


async def test_round_trip_with_ttl() -> None:
    cache = RedisScoreCache(RedisSettings(url=REDIS_URL, ttl_s=30, key_prefix="t:"))
    key = f"t:{time.monotonic_ns()}"
    await cache.put_many([(key, [0.25, 0.5])])
    assert await cache.get_many([key, key + "-missing"]) == [[0.25, 0.5], None]
    ttl = redis.Redis.from_url(REDIS_URL).ttl(key)
    assert 0 < ttl <= 30
    await cache.close()


async def test_garbage_value_is_a_miss() -> None:
    key = f"t:garbage:{time.monotonic_ns()}"
    redis.Redis.from_url(REDIS_URL).set(key, b"\x00not json", ex=30)
    cache = RedisScoreCache(RedisSettings(url=REDIS_URL))
    assert await cache.get_many([key]) == [None]
    await cache.close()


async def test_unreachable_redis_means_misses_not_errors(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisScoreCache(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", timeout_ms=100))
    errors_before = metrics.CACHE_ERRORS.labels(operation="get")._value.get()
    started = time.monotonic()
    assert await cache.get_many(["a", "b"]) == [None, None]
    await cache.put_many([("a", [0.1])])  # paused after the failure: returns at once
    assert await cache.get_many(["a"]) == [None]
    assert time.monotonic() - started < 2
    assert metrics.CACHE_ERRORS.labels(operation="get")._value.get() == errors_before + 1
    assert "scoring without the cache" in caplog.text
    await cache.close()
