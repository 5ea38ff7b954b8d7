"""When each record of an open-loop load test is due, and a clock-driven sending loop.

The rate climbs linearly from 0 to `rate` over `ramp_s`, then holds until `duration_s`. The
number of records due by time t is the integral of the rate, so record i is due at the t where
that integral reaches i. The loop sends each record when it is due, whatever the system under
test does: it never waits for a verdict. When the sender itself cannot keep up (the producer's
buffer is full, the machine is busy), records go out late; that delay is measured and reported
as generator lag, never hidden by stretching the schedule.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A target rate (records/s) reached by a linear ramp, held until the end."""

    rate: float
    duration_s: float
    ramp_s: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0:
            raise ValueError("rate and duration must be positive")
        if not 0 <= self.ramp_s <= self.duration_s:
            raise ValueError("the ramp must fit in the duration")

    @property
    def count(self) -> int:
        """Records due within the duration."""
        return math.floor(self.due_by(self.duration_s) + 1e-9)

    def rate_at(self, t: float) -> float:
        """Target rate at `t` seconds after the start."""
        if self.ramp_s and t < self.ramp_s:
            return self.rate * max(t, 0.0) / self.ramp_s
        return self.rate

    def due_by(self, t: float) -> float:
        """How many records are due in the first `t` seconds (the integral of the rate)."""
        if self.ramp_s and t <= self.ramp_s:
            return self.rate * t * t / (2 * self.ramp_s)
        return self.rate * (t - self.ramp_s / 2)

    def offset(self, index: int) -> float:
        """Seconds after the start at which record `index` (0-based) is due."""
        ramp_records = self.rate * self.ramp_s / 2
        if self.ramp_s and index <= ramp_records:
            return math.sqrt(2 * self.ramp_s * index / self.rate)
        return index / self.rate + self.ramp_s / 2


class Clock(Protocol):
    """Monotonic time and sleeping; a fake one makes the loop testable."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class LagStats:
    """How late records went out compared with the schedule."""

    late_threshold_s: float = 0.010
    sent: int = 0
    late: int = 0
    max_lag_s: float = 0.0
    total_lag_s: float = 0.0
    lags_s: list[float] = field(default_factory=list, repr=False)

    def record(self, lag_s: float) -> None:
        lag_s = max(lag_s, 0.0)
        self.sent += 1
        self.total_lag_s += lag_s
        self.max_lag_s = max(self.max_lag_s, lag_s)
        self.lags_s.append(lag_s)
        if lag_s > self.late_threshold_s:
            self.late += 1

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.lags_s)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
        return {
            "records": self.sent,
            "late_records": self.late,
            "late_threshold_ms": round(self.late_threshold_s * 1000, 3),
            "mean_lag_ms": round(self.total_lag_s / self.sent * 1000, 3) if self.sent else 0.0,
            "p99_lag_ms": round(p99 * 1000, 3),
            "max_lag_ms": round(self.max_lag_s * 1000, 3),
        }


#: Sends one record and returns at once with what will report its delivery (not awaited here).
SendFn = Callable[[int], Awaitable[object]]

#: Sleeps shorter than this are skipped: records that close together go out back to back.
MIN_SLEEP_S = 0.001


async def run_open_loop(
    schedule: Schedule,
    send: SendFn,
    clock: Clock,
    stop: asyncio.Event | None = None,
    stats: LagStats | None = None,
) -> LagStats:
    """Call `send(i)` for every record at its due time; return how late the sends were.

    `send` must only hand the record over (e.g. to the producer's buffer); the loop never
    waits for delivery or for the system under test, so a slow worker cannot slow it down.
    `stats` (filled as records go out) lets a caller show the lag while the loop runs.
    """
    stats = LagStats() if stats is None else stats
    start = clock.now()
    for index in range(schedule.count):
        if stop is not None and stop.is_set():
            break
        due = start + schedule.offset(index)
        wait = due - clock.now()
        if wait >= MIN_SLEEP_S:
            await clock.sleep(wait)
        stats.record(clock.now() - due)
        await send(index)
    return stats
