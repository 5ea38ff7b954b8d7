"""Exact and near deduplication, balancing, the train/validation split and the rate limiter."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import pytest

from models.synth.dedup import MinHasher, band_rows, find_duplicates, jaccard, shingles
from models.synth.ratelimit import TokenBucket
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


def test_lsh_bands_find_pairs_at_the_threshold() -> None:
    for threshold in (0.5, 0.8, 0.9):
        rows = band_rows(threshold)
        assert 128 % rows == 0
        assert 1 - (1 - threshold**rows) ** (128 // rows) >= 0.99
    # a higher threshold allows more rows per band (fewer candidates to check)
    assert band_rows(0.9) >= band_rows(0.8) >= band_rows(0.5)


def test_minhash_estimates_jaccard() -> None:
    hasher = MinHasher()
    first, second = shingles(LONG), shingles(LONG.replace("consulting company", "bakery business"))
    agreement = float((hasher.signature(first) == hasher.signature(second)).mean())
    assert abs(agreement - jaccard(first, second)) < 0.15


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


async def test_token_bucket_spaces_requests() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(60, burst=2, clock=lambda: now[0], sleep=sleep)
    times = []
    for _ in range(5):
        await bucket.acquire()
        times.append(now[0])
    assert times == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0])
    now[0] += 10  # idle: the bucket refills, but only up to its burst
    start = now[0]
    for _ in range(3):
        await bucket.acquire()
    assert now[0] - start == pytest.approx(1.0)


async def test_token_bucket_with_the_real_clock_and_concurrent_callers() -> None:
    bucket = TokenBucket(600)  # one every 0.1 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(bucket.acquire() for _ in range(4)))
    assert loop.time() - started == pytest.approx(0.3, abs=0.08)


def test_token_bucket_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(10, burst=0)
