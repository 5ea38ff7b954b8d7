"""The load test's PNG: latency percentiles and throughput, second by second."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plot(timeline: list[dict[str, float]], title: str, path: Path) -> None:
    """Two panels over the run's seconds: p50/p95/p99 latency, and sent vs. verdicts per second."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    seconds = [row["second"] for row in timeline]
    figure, (latency, rate) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        latency.plot(seconds, [row[name] for row in timeline], label=name.removesuffix("_ms"))
    latency.set_ylabel("produce -> verdict (ms)")
    latency.set_yscale("symlog", linthresh=10)
    latency.legend(loc="upper left")
    latency.grid(alpha=0.3)
    rate.plot(seconds, [row["sent"] for row in timeline], label="sent/s")
    rate.plot(seconds, [row["verdicts"] for row in timeline], label="verdicts/s")
    rate.set_xlabel("seconds since the start")
    rate.set_ylabel("records per second")
    rate.legend(loc="upper left")
    rate.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_title(config: dict[str, Any]) -> str:
    return (
        f"guardstream load test {config['run_id']}: {config['rate']:g}/s for {config['duration_s']:g} s "
        f"(ramp {config['ramp_s']:g} s), {config['workers']} worker(s)"
    )
