"""Where a prompt's time went, in the workers' own words: their latency histograms, read from
their /metrics once the load is over and merged over the workers.

Each histogram is summarized as its count, its mean and, for p50 and p99, the upper bound of the
bucket the quantile falls in (so "p99_le_ms": 100 means the 99th percentile is at most 100 ms).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: The stages of a prompt's way through a worker, in order.
STAGE_HISTOGRAMS = (
    "guardstream_batch_age_seconds",
    "guardstream_model_wait_seconds",
    "guardstream_model_latency_seconds",
    "guardstream_batch_latency_seconds",
    "guardstream_end_to_end_latency_seconds",
)


def read_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local worker's endpoint
        return str(response.read().decode())


def stage_latencies(texts: Iterable[str]) -> dict[str, dict[str, float | None]]:
    """The stage histograms of every worker's /metrics text, merged and summarized by name and labels."""
    merged: dict[str, _Histogram] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in STAGE_HISTOGRAMS:
                continue
            for sample in family.samples:
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                name = family.name + "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
                merged.setdefault(name, _Histogram()).add(sample.name, sample.labels.get("le"), sample.value)
    in_order = sorted(
        merged.items(), key=lambda item: (STAGE_HISTOGRAMS.index(item[0].split("{")[0]), item[0])
    )
    return {name: histogram.summary() for name, histogram in in_order if histogram.count}


class _Histogram:
    def __init__(self) -> None:
        self.buckets: dict[float, float] = {}  # upper bound -> cumulative count
        self.count = 0.0
        self.total = 0.0

    def add(self, sample: str, bound: str | None, value: float) -> None:
        if sample.endswith("_bucket") and bound is not None:
            self.buckets[float(bound)] = self.buckets.get(float(bound), 0.0) + value
        elif sample.endswith("_count"):
            self.count += value
        elif sample.endswith("_sum"):
            self.total += value

    def summary(self) -> dict[str, float | None]:
        return {
            "count": self.count,
            "mean_ms": round(1000 * self.total / self.count, 3),
            "p50_le_ms": self._bound(0.5),
            "p99_le_ms": self._bound(0.99),
        }

    def _bound(self, quantile: float) -> float | None:
        """The upper bound (ms) of the bucket holding `quantile`; None past the last finite bucket."""
        for bound, cumulative in sorted(self.buckets.items()):
            if cumulative >= quantile * self.count:
                return None if bound == float("inf") else round(1000 * bound, 3)
        return None


def summarize(stages: dict[str, dict[str, float | None]]) -> str:
    """One line per stage: count, mean, p50 and p99 bounds."""
    return "\n".join(
        f"  {name:58} n {int(figures['count'] or 0):>7}  mean {figures['mean_ms']:>9} ms"
        f"  p50 <= {figures['p50_le_ms']} ms  p99 <= {figures['p99_le_ms']} ms"
        for name, figures in stages.items()
    )


def scrape(urls: Iterable[str]) -> dict[str, Any]:
    """`stage_latencies` of the workers at `urls`; {"error": ...} when one cannot be read."""
    try:
        return stage_latencies(read_metrics(url) for url in urls)
    except OSError as exc:
        return {"error": f"could not read the workers' metrics: {exc!r}"}
