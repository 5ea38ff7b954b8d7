"""The accounting of a load test: what was sent, what came back, and the promise kept or not.

Every sent id must end with exactly one outcome (a verdict, or a dead letter with the expected
reason). An id with no outcome by the end of the grace period is lost; one with more than one
is duplicated (allowed by at-least-once delivery, but counted). Latency is produce -> verdict:
from the moment the generator handed the record to its producer to the verdict record's Kafka
timestamp, which the worker's producer stamps as it sends the verdict (both on this machine's
clock). Only an id's first outcome gives a latency.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

#: Latencies are recorded in microseconds, from 1 us to 1 hour, 3 significant digits.
_HIST_RANGE_US = (1, 3_600_000_000)
_HIST_DIGITS = 3
PERCENTILES = (50.0, 95.0, 99.0)


@dataclass(frozen=True, slots=True)
class Sent:
    sent_ms: float
    kind: str
    expected_reason: str | None
    first_use: bool


@dataclass
class SecondStats:
    """What happened in one second of the run (by outcome time)."""

    outcomes: int = 0
    verdicts: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def percentile(ordered: list[float], pct: float) -> float:
    """The value at `pct` percent of an ascending list (nearest rank)."""
    if not ordered:
        return 0.0
    index = math.ceil(pct / 100 * len(ordered)) - 1
    return ordered[max(0, min(len(ordered) - 1, index))]


class Ledger:
    """Sent records by id, their outcomes, and the figures of the report."""

    def __init__(self, start_ms: float) -> None:
        self.start_ms = start_ms
        self.sent: dict[str, Sent] = {}
        self.outcomes: Counter[str] = Counter()
        self.send_failures: Counter[str] = Counter()
        self.letter_reasons: Counter[str] = Counter()
        self.wrong_outcome: Counter[str] = Counter()
        self.unknown_outcomes = 0
        self.cached_verdicts = 0
        self.verdicts = 0
        self.latency_us = HdrHistogram(*_HIST_RANGE_US, _HIST_DIGITS)
        #: the same latencies apart for long prompts (several windows) and the rest (short)
        self.latency_by_length_us = {
            length: HdrHistogram(*_HIST_RANGE_US, _HIST_DIGITS) for length in ("short", "long")
        }
        self.per_second: dict[int, SecondStats] = {}
        self.sent_per_second: Counter[int] = Counter()
        self.first_verdict_ms: float | None = None
        self.last_verdict_ms: float | None = None

    def record_sent(
        self, record_id: str, sent_ms: float, kind: str, expected_reason: str | None, first_use: bool = True
    ) -> None:
        self.sent[record_id] = Sent(sent_ms, kind, expected_reason, first_use)
        self.sent_per_second[self._second(sent_ms)] += 1

    def record_send_failure(self, record_id: str, error: str) -> None:
        """The producer could not deliver the record: it never reached the worker."""
        self.send_failures[error] += 1
        self.sent.pop(record_id, None)

    def record_verdict(self, record_id: str, cached: bool, at_ms: float) -> None:
        sent = self._outcome(record_id, at_ms, expected=None)
        if sent is None:
            return
        self.verdicts += 1
        self.cached_verdicts += cached
        self.first_verdict_ms = min(at_ms, self.first_verdict_ms or at_ms)
        self.last_verdict_ms = max(at_ms, self.last_verdict_ms or at_ms)
        if self.outcomes[record_id] == 1:  # latency of the first outcome only
            latency_ms = max(0.0, at_ms - sent.sent_ms)
            self.latency_us.record_value(max(1, round(latency_ms * 1000)))
            length = "long" if sent.kind == "long" else "short"
            self.latency_by_length_us[length].record_value(max(1, round(latency_ms * 1000)))
            bucket = self.per_second.setdefault(self._second(at_ms), SecondStats())
            bucket.verdicts += 1
            bucket.latencies_ms.append(latency_ms)

    def record_letter(self, record_id: str | None, reason: str, at_ms: float) -> None:
        self.letter_reasons[reason] += 1
        if record_id is not None:
            self._outcome(record_id, at_ms, expected=reason)
        else:
            self.unknown_outcomes += 1

    def _outcome(self, record_id: str, at_ms: float, expected: str | None) -> Sent | None:
        sent = self.sent.get(record_id)
        if sent is None:
            self.unknown_outcomes += 1
            return None
        self.outcomes[record_id] += 1
        self.per_second.setdefault(self._second(at_ms), SecondStats()).outcomes += 1
        if sent.expected_reason != expected:
            self.wrong_outcome[f"{sent.kind}: {expected or 'verdict'}"] += 1
        return sent

    def _second(self, at_ms: float) -> int:
        return int((at_ms - self.start_ms) // 1000)

    @property
    def lost(self) -> list[str]:
        return [rid for rid in self.sent if self.outcomes[rid] == 0]

    @property
    def duplicated(self) -> list[str]:
        return [rid for rid, n in self.outcomes.items() if n > 1]

    def complete(self) -> bool:
        return all(self.outcomes[rid] > 0 for rid in self.sent)

    def latency_summary(self, hist: HdrHistogram | None = None) -> dict[str, float]:
        """Count, percentiles, max and mean of every latency (or of those in `hist`)."""
        hist = self.latency_us if hist is None else hist
        if not hist.get_total_count():
            return {"count": 0}
        summary: dict[str, float] = {"count": hist.get_total_count()}
        for pct in PERCENTILES:
            summary[f"p{pct:g}_ms"] = round(hist.get_value_at_percentile(pct) / 1000, 3)
        summary["max_ms"] = round(hist.get_max_value() / 1000, 3)
        summary["mean_ms"] = round(hist.get_mean_value() / 1000, 3)
        return summary

    def timeline(self) -> list[dict[str, float]]:
        """Per second of the run: records sent, outcomes, verdicts and latency percentiles."""
        last = max([*self.per_second, *self.sent_per_second], default=-1)
        rows = []
        for second in range(last + 1):
            stats = self.per_second.get(second, SecondStats())
            ordered = sorted(stats.latencies_ms)
            row: dict[str, float] = {
                "second": second,
                "sent": self.sent_per_second.get(second, 0),
                "outcomes": stats.outcomes,
                "verdicts": stats.verdicts,
            }
            for pct in PERCENTILES:
                row[f"p{pct:g}_ms"] = round(percentile(ordered, pct), 3)
            rows.append(row)
        return rows

    def throughput(self) -> float:
        """Verdicts per second, from the first verdict to the last."""
        if self.first_verdict_ms is None or self.last_verdict_ms is None:
            return 0.0
        span_s = (self.last_verdict_ms - self.first_verdict_ms) / 1000
        return self.verdicts / span_s if span_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures of the report (without the timeline)."""
        lost, duplicated = self.lost, self.duplicated
        repeats = [s for s in self.sent.values() if s.kind == "repeat"]
        return {
            "sent": len(self.sent),
            "sent_by_kind": dict(Counter(s.kind for s in self.sent.values())),
            "send_failures": dict(self.send_failures),
            "verdicts": self.verdicts,
            "dead_letters_by_reason": dict(self.letter_reasons),
            "lost": len(lost),
            "lost_examples": lost[:10],
            "duplicated": len(duplicated),
            "duplicated_examples": duplicated[:10],
            "wrong_outcome": dict(self.wrong_outcome),
            "unknown_outcomes": self.unknown_outcomes,
            "throughput_verdicts_per_s": round(self.throughput(), 2),
            "cache_hit_ratio": round(self.cached_verdicts / self.verdicts, 4) if self.verdicts else 0.0,
            "repeats_of_a_text_sent_before": sum(not s.first_use for s in repeats),
            "latency_produce_to_verdict": self.latency_summary(),
            "latency_short_prompts": self.latency_summary(self.latency_by_length_us["short"]),
            "latency_long_prompts": self.latency_summary(self.latency_by_length_us["long"]),
        }
