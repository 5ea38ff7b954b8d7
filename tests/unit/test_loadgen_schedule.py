"""The load generator's schedule is open loop, and its mix has the configured shares."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

import orjson
import pytest

from loadtest.mix import EXPECTED_REASON, Kind, MixConfig, RecordFactory, Zipf
from loadtest.schedule import Schedule, run_open_loop


class FakeClock:
    """Time that moves only when slept (or when a test moves it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def test_steady_rate_spaces_records_evenly() -> None:
    schedule = Schedule(rate=50, duration_s=10)
    assert schedule.count == 500
    assert [schedule.offset(i) for i in (0, 1, 50, 499)] == pytest.approx([0, 0.02, 1.0, 9.98])


def test_ramp_follows_the_integral_of_a_linear_rate() -> None:
    schedule = Schedule(rate=100, duration_s=20, ramp_s=10)
    assert schedule.count == round(100 * 10 / 2 + 100 * 10)
    offsets = [schedule.offset(i) for i in range(schedule.count)]
    assert offsets == sorted(offsets)
    for t in (1.0, 5.0, 9.0, 10.0, 15.0):
        sent_by_t = sum(o < t for o in offsets)
        assert abs(sent_by_t - schedule.due_by(t)) <= 1
    # half-way up the ramp the gap between records is twice the full-rate gap
    i = math.floor(schedule.due_by(5.0))
    assert schedule.offset(i + 1) - schedule.offset(i) == pytest.approx(2 / 100, rel=0.02)
    assert schedule.offset(schedule.count - 1) == pytest.approx(20, abs=0.02)
    assert schedule.rate_at(2.5) == 25 and schedule.rate_at(12) == 100


async def test_sends_on_schedule_whatever_the_sink_does() -> None:
    clock = FakeClock()
    schedule = Schedule(rate=200, duration_s=3, ramp_s=1)
    start = clock.now()
    sent_at: list[float] = []
    never_answered: list[asyncio.Future[None]] = []

    async def send(index: int) -> object:  # a sink that never acknowledges anything
        sent_at.append(clock.now() - start)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        never_answered.append(future)
        return future

    stats = await run_open_loop(schedule, send, clock)
    assert len(sent_at) == schedule.count == stats.sent
    expected = [schedule.offset(i) for i in range(schedule.count)]
    assert max(abs(a - e) for a, e in zip(sent_at, expected, strict=True)) < 0.0011
    assert stats.late == 0 and not any(f.done() for f in never_answered)


async def test_a_generator_that_falls_behind_reports_lag_and_skips_nothing() -> None:
    clock = FakeClock()
    schedule = Schedule(rate=100, duration_s=2)  # one record every 10 ms

    async def slow_send(index: int) -> object:  # each hand-over takes 15 ms
        clock.t += 0.015
        return None

    stats = await run_open_loop(schedule, slow_send, clock)
    assert stats.sent == schedule.count == 200
    assert stats.late > 150
    assert stats.max_lag_s == pytest.approx(199 * 0.005, abs=0.002)
    assert stats.summary()["max_lag_ms"] == pytest.approx(995, abs=2)


def test_zipf_probabilities_and_draws() -> None:
    zipf = Zipf(100, 1.0, random.Random(3))
    harmonic = sum(1 / k for k in range(1, 101))
    assert zipf.probabilities[0] == pytest.approx(1 / harmonic)
    assert zipf.probabilities[9] == pytest.approx(zipf.probabilities[0] / 10)
    draws = Counter(zipf.draw() for _ in range(50_000))
    assert draws[0] / 50_000 == pytest.approx(zipf.probabilities[0], abs=0.01)
    assert draws[1] > draws[10] > draws[90]


def test_mix_shares_and_expected_outcomes() -> None:
    config = MixConfig(repeat_share=0.4, long_share=0.05, bad_share=0.08, pool_size=50, zipf_s=1.1)
    factory = RecordFactory("run", config, seed=1)
    records = [factory.make(i) for i in range(20_000)]
    kinds = Counter(r.kind for r in records)
    assert kinds[Kind.REPEAT] / 20_000 == pytest.approx(0.4, abs=0.015)
    assert kinds[Kind.LONG] / 20_000 == pytest.approx(0.05, abs=0.006)
    assert sum(kinds[k] for k in EXPECTED_REASON) / 20_000 == pytest.approx(0.08, abs=0.006)
    repeats = [r for r in records if r.kind is Kind.REPEAT]
    assert sum(r.first_use for r in repeats) <= 50  # each pool text is new once
    texts = Counter(orjson.loads(r.value)["text"] for r in repeats)
    assert texts.most_common(1)[0][1] / len(repeats) == pytest.approx(
        Zipf(50, 1.1, random.Random()).probabilities[0], abs=0.02
    )
    assert len({r.id for r in records}) == len(records)
    for record in records[:2000]:
        if record.kind in (Kind.UNIQUE, Kind.REPEAT, Kind.LONG):
            assert record.expected_reason is None
            assert orjson.loads(record.value)["id"] == record.id
        else:
            assert record.expected_reason == EXPECTED_REASON[record.kind]
