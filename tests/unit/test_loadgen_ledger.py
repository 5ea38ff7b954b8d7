"""The load test's accounting: lost, duplicated, wrong outcomes, latency, timeline."""

from __future__ import annotations

import pytest

from loadtest.ledger import Ledger, percentile

START = 1_000_000.0


def ledger_with(ids: list[str], reason: str | None = None) -> Ledger:
    ledger = Ledger(start_ms=START)
    for i, rid in enumerate(ids):
        ledger.record_sent(rid, START + i * 10, "bad_json" if reason else "unique", reason)
    return ledger


def test_lost_duplicated_and_latency() -> None:
    ledger = ledger_with(["a", "b", "c", "d"])
    ledger.record_verdict("a", cached=False, at_ms=START + 100)  # 100 ms
    ledger.record_verdict("b", cached=True, at_ms=START + 1210)  # 1200 ms
    ledger.record_verdict("b", cached=True, at_ms=START + 1500)  # duplicate: no second latency
    ledger.record_verdict("c", cached=False, at_ms=START + 2020)  # 2000 ms
    ledger.record_verdict("zzz", cached=False, at_ms=START)  # not ours
    summary = ledger.summary()
    assert summary["sent"] == 4 and summary["verdicts"] == 4
    assert summary["lost"] == 1 and summary["lost_examples"] == ["d"]
    assert summary["duplicated"] == 1 and summary["duplicated_examples"] == ["b"]
    assert summary["unknown_outcomes"] == 1
    assert summary["cache_hit_ratio"] == 0.5
    latency = summary["latency_produce_to_verdict"]
    assert latency["count"] == 3
    assert latency["p50_ms"] == pytest.approx(1200, rel=0.002)
    assert latency["max_ms"] == pytest.approx(2000, rel=0.002)
    assert not ledger.complete()
    assert summary["throughput_verdicts_per_s"] == pytest.approx(4 / 1.92, abs=0.01)


def test_dead_letters_are_outcomes_and_wrong_ones_are_flagged() -> None:
    ledger = ledger_with(["x", "y"], reason="invalid_json")
    ledger.record_letter("x", "invalid_json", at_ms=START + 50)
    ledger.record_verdict("y", cached=False, at_ms=START + 60)  # should have been a dead letter
    ledger.record_letter(None, "invalid_utf8", at_ms=START + 70)  # no key: cannot be matched
    summary = ledger.summary()
    assert ledger.complete() and summary["lost"] == 0
    assert summary["dead_letters_by_reason"] == {"invalid_json": 1, "invalid_utf8": 1}
    assert summary["wrong_outcome"] == {"bad_json: verdict": 1}
    assert summary["unknown_outcomes"] == 1


def test_a_record_the_producer_could_not_send_is_not_counted_as_lost() -> None:
    ledger = ledger_with(["a", "b"])
    ledger.record_send_failure("b", "KafkaTimeoutError")
    ledger.record_verdict("a", cached=False, at_ms=START + 5)
    summary = ledger.summary()
    assert summary["sent"] == 1 and summary["lost"] == 0
    assert summary["send_failures"] == {"KafkaTimeoutError": 1}


def test_timeline_per_second() -> None:
    ledger = ledger_with([f"r{i}" for i in range(150)])  # sent over 1.5 s
    for i in range(150):
        ledger.record_verdict(f"r{i}", cached=False, at_ms=START + i * 10 + 40 + i)
    rows = ledger.timeline()
    assert [row["sent"] for row in rows] == [100, 50]
    assert sum(row["verdicts"] for row in rows) == 150
    assert rows[0]["p50_ms"] < rows[1]["p50_ms"]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([], 50) == 0.0


def test_long_prompts_latency_is_reported_apart_from_the_short_ones() -> None:
    ledger = Ledger(start_ms=START)
    ledger.record_sent("s", START, "unique", None)
    ledger.record_sent("r", START, "repeat", None)
    ledger.record_sent("l", START, "long", None)
    ledger.record_verdict("s", cached=False, at_ms=START + 10)
    ledger.record_verdict("r", cached=True, at_ms=START + 20)
    ledger.record_verdict("l", cached=False, at_ms=START + 900)
    summary = ledger.summary()
    assert summary["latency_short_prompts"]["count"] == 2
    assert summary["latency_short_prompts"]["max_ms"] == pytest.approx(20, rel=0.002)
    assert summary["latency_long_prompts"]["count"] == 1
    assert summary["latency_long_prompts"]["p99_ms"] == pytest.approx(900, rel=0.002)
