"""A token bucket that spaces generator requests to at most N per minute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """At most `per_minute` acquisitions a minute, with bursts of up to `burst`.

    The bucket starts full; each `acquire` takes one token, waiting until one has refilled when
    the bucket is empty. Waiters are served in arrival order. `clock` and `sleep` are injectable
    for tests.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError(f"requests per minute must be positive, got {per_minute}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate_per_s = per_minute / 60.0
        self.capacity = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    async def acquire(self) -> float:
        """Take one token, waiting for it if needed; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            self._refill()
            while self._tokens < 1.0:
                delay = (1.0 - self._tokens) / self.rate_per_s
                await self._sleep(delay)
                waited += delay
                self._refill()
            self._tokens -= 1.0
        return waited


class Unlimited:
    """The rate limiter used without `--requests-per-minute`: never waits."""

    async def acquire(self) -> float:
        return 0.0
