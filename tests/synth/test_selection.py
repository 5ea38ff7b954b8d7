"""Exact and near deduplication, balancing, the train/validation split and the rate limiter."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import pytest

from models.synth.dedup import find_duplicates, jaccard, shingles
from models.synth.ratelimit import RequestLimiter
from models.synth.selection import TRAIN, VALIDATION, balance, split_of
from tests.synth.fakes import distinct_text

LONG = "How should I structure my consulting company so that I pay as little tax as possible next year?"


def test_exact_duplicates_ignore_case_and_whitespace() -> None:
    texts = [LONG, "  " + LONG.upper().replace(" ", "   "), distinct_text("other")]
    duplicates = find_duplicates(texts)
    assert duplicates.kept == [0, 2] and duplicates.exact == [1] and duplicates.near == []


def test_near_duplicates_are_found_and_the_first_is_kept() -> None:
    variant = LONG.replace("next year", "next years")  # one character added
    unrelated = "What is VAT and who pays it in the end, the shop or the customer?"
    duplicates = find_duplicates([unrelated, LONG, variant])
    assert jaccard(shingles(LONG), shingles(variant)) >= 0.8
    assert duplicates.kept == [0, 1] and duplicates.near == [2] and duplicates.exact == []


def test_threshold_decides_and_above_one_disables() -> None:
    edited = LONG.replace("consulting company", "bakery business")
    similarity = jaccard(shingles(LONG), shingles(edited))
    assert 0.5 < similarity < 0.8
    assert find_duplicates([LONG, edited], threshold=0.8).near == []
    assert find_duplicates([LONG, edited], threshold=0.5).near == [1]
    assert find_duplicates([LONG, LONG.lower() + "!"], threshold=1.01).near == []


def test_no_false_positives_among_many_distinct_texts() -> None:
    texts = [distinct_text(str(seed)) for seed in range(300)]
    duplicates = find_duplicates(texts, threshold=0.8)
    assert len(duplicates.kept) == 300


def test_every_planted_near_duplicate_is_found_among_thousands() -> None:
    """Each of 200 texts comes back once with one word changed (Jaccard about 0.8 to 0.95)."""
    originals = [f"{distinct_text(str(n))} about the {n}th quarterly tax filing" for n in range(3000)]
    variants = [text.replace("quarterly", "quarterley") for text in originals[:200]]
    assert min(jaccard(shingles(o), shingles(v)) for o, v in zip(originals, variants, strict=False)) >= 0.8
    duplicates = find_duplicates([*originals, *variants], threshold=0.8)
    assert duplicates.near == list(range(3000, 3200))
    assert len(duplicates.kept) == 3000


@dataclass(frozen=True)
class Row:
    text: str
    policy: str
    label: int


def test_balance_downsamples_to_the_rarest_label_per_policy() -> None:
    rows = [Row(distinct_text(f"a{i}"), "a", 1) for i in range(7)] + [
        Row(distinct_text(f"b{i}"), "a", 0) for i in range(3)
    ]
    rows += [Row(distinct_text(f"c{i}"), "b", 1) for i in range(2)] + [
        Row(distinct_text(f"d{i}"), "b", 0) for i in range(5)
    ]
    kept, removed = balance(rows)
    counts = Counter((row.policy, row.label) for row in kept)
    assert counts == {("a", 1): 3, ("a", 0): 3, ("b", 1): 2, ("b", 0): 2}
    assert removed == len(rows) - 10
    assert [rows.index(row) for row in kept] == sorted(rows.index(row) for row in kept)  # order kept
    assert balance(list(reversed(rows)))[0] == list(reversed(kept))  # which rows stay: by text, not position


def test_balance_drops_a_policy_with_one_label() -> None:
    kept, removed = balance([Row("only violations here", "a", 1), Row("more violations here", "a", 1)])
    assert kept == [] and removed == 2


def test_split_is_deterministic_and_near_the_share() -> None:
    texts = [distinct_text(str(seed)) for seed in range(2000)]
    splits = [split_of(text, 0.15) for text in texts]
    assert splits == [split_of(text, 0.15) for text in texts]
    share = splits.count(VALIDATION) / len(splits)
    assert 0.12 < share < 0.18
    assert set(splits) == {TRAIN, VALIDATION}
    assert split_of("Some Text  here", 0.15) == split_of("some text here", 0.15)
    assert {split_of(text, 0.0) for text in texts[:50]} == {TRAIN}


async def test_requests_are_spaced_after_a_burst() -> None:
    limiter = RequestLimiter(600, burst=2)  # one every 0.1 s, two at once after a pause
    loop = asyncio.get_running_loop()
    started = loop.time()
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(loop.time() - started)
    assert times[1] < 0.05  # the burst
    assert times[4] == pytest.approx(0.3, abs=0.08)


async def test_concurrent_callers_share_the_rate() -> None:
    limiter = RequestLimiter(600)  # one every 0.1 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited = await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert loop.time() - started == pytest.approx(0.3, abs=0.08)
    assert max(waited) == pytest.approx(0.3, abs=0.08)


def test_the_limiter_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="positive"):
        RequestLimiter(0)
    with pytest.raises(ValueError, match="burst"):
        RequestLimiter(10, burst=0)
