"""How a benchmark run is timed, with a stand-in verdict counter (the real runs: `make bench`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from loadtest.bench_run import BenchFailed, _count_verdicts


class ScriptedCounter:
    """Hands out the verdict keys of each scripted poll, then nothing."""

    def __init__(self, polls: list[list[bytes]]) -> None:
        self.polls = polls
        self.counts: Counter[bytes] = Counter()

    async def poll(self) -> int:
        keys = self.polls.pop(0) if self.polls else []
        self.counts.update(keys)
        return len(keys)


VALUES = {f"k{i}": b"{}" for i in range(4)}


async def count(polls: list[list[bytes]], **options: Any) -> Any:
    return await _count_verdicts(ScriptedCounter(polls), VALUES, 5.0, None, **options)  # type: ignore[arg-type]


async def test_a_run_whose_process_exits_fails_at_once_in_one_line() -> None:
    with pytest.raises(BenchFailed, match="exited with status 1"):
        await count([[b"k0"]], exit_status=lambda: 1)


async def test_verdicts_that_all_arrive_at_once_cannot_be_timed() -> None:
    with pytest.raises(BenchFailed, match="too few to time"):
        await count([[b"k0", b"k1", b"k2", b"k3"]])


async def test_the_rate_counts_from_the_first_arrival_and_reports_duplicates() -> None:
    figures = await count([[b"k0"], [b"k1", b"k2"], [b"k3", b"k3"]])
    assert figures.lost == 0 and figures.duplicated == 1
    assert figures.verdicts_per_s > 0
