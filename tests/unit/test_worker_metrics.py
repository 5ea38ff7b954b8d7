"""The load test's summary of the workers' stage histograms, from real /metrics text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtest.worker_metrics import stage_latencies, summarize


def metrics_text(waits_s: list[float], lane: str = "short") -> str:
    registry = CollectorRegistry()
    wait = Histogram(
        "guardstream_model_wait_seconds", "", ["lane"], buckets=(0.01, 0.05, 0.1), registry=registry
    )
    other = Histogram("unrelated_seconds", "", registry=registry)
    for seconds in waits_s:
        wait.labels(lane=lane).observe(seconds)
        other.observe(seconds)
    return generate_latest(registry).decode()


def test_histograms_of_several_workers_merge_by_name_and_labels() -> None:
    workers = [
        metrics_text([0.005] * 98 + [0.07, 0.2]),
        metrics_text([0.02] * 100),
        metrics_text([1.0], "long"),
    ]
    stages = stage_latencies(workers)
    wait = "guardstream_model_wait_seconds"
    assert set(stages) == {f"{wait}{{lane=long}}", f"{wait}{{lane=short}}"}
    short = stages[f"{wait}{{lane=short}}"]
    assert short["count"] == 200
    assert short["p50_le_ms"] == 50.0  # 98 at most 10 ms, 198 at most 50 ms
    assert short["p99_le_ms"] == 50.0  # the 198th of 200
    assert stages[f"{wait}{{lane=long}}"]["p50_le_ms"] is None  # past the last finite bucket
    assert short["mean_ms"] == round(1000 * (0.005 * 98 + 0.07 + 0.2 + 0.02 * 100) / 200, 3)
    assert "lane=short" in summarize(stages)
