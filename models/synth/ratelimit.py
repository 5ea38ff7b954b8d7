"""Generator requests spaced to at most N a minute (aiolimiter's leaky bucket)."""

from __future__ import annotations

import time

from aiolimiter import AsyncLimiter


class RequestLimiter:
    """At most `per_minute` acquisitions a minute, with bursts of up to `burst` (at start or after
    a pause); waiters are served in arrival order."""

    def __init__(self, per_minute: float, burst: int = 1) -> None:
        if per_minute <= 0:
            raise ValueError(f"requests per minute must be positive, got {per_minute}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._limiter = AsyncLimiter(burst, burst * 60.0 / per_minute)

    async def acquire(self) -> float:
        """Take one request's place, waiting for it if needed; returns the seconds waited."""
        started = time.monotonic()
        await self._limiter.acquire()
        return time.monotonic() - started


class Unlimited:
    """The rate limiter used without `--requests-per-minute`: never waits."""

    async def acquire(self) -> float:
        return 0.0
