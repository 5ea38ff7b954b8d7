"""Timed runs of a process that turns prompts into verdicts, for the throughput benchmarks.

`preloaded_run` loads a topic first, then starts the process that reads it, and times it from
its first verdicts to its last; `timed_run` publishes to a process already running. Both check
the outcome like the load test's ledger: every id one verdict, none lost, none twice.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from loadtest.demo import REPO_ROOT, settings_env, wait_ready
from loadtest.kafka_client import publish
from loadtest.worker_metrics import read_metrics
from worker.config import Settings, load_settings

__all__ = [
    "REPO_ROOT",
    "Process",
    "RunFigures",
    "machine_state",
    "preloaded_run",
    "spawn",
    "timed_run",
    "write_report",
]


class Process(enum.StrEnum):
    """The module each benchmarked process runs (`python -m ...`)."""

    WORKER = "worker.cli"
    STANDIN = "loadtest.standin_worker"
    PASSTHROUGH = "loadtest.passthrough"
    FAUST_PASSTHROUGH = "loadtest.faust_passthrough"
    NAIVE = "loadtest.naive_worker"


@dataclass(frozen=True)
class RunFigures:
    """One timed run: verdicts/s, the model's busy share of that time, and the ledger."""

    verdicts_per_s: float
    model_busy: float | None
    sent: int
    lost: int
    duplicated: int


def topic_settings(prefix: str, web_port: int, batching: dict[str, int] | None = None) -> Settings:
    """Settings of a run on its own topics and consumer group (and `batching` over the defaults)."""
    kafka = {
        "input_topic": f"{prefix}.prompts",
        "verdicts_topic": f"{prefix}.verdicts",
        "dlq_topic": f"{prefix}.dlq",
        "group_id": prefix,
    }
    return load_settings({"kafka": kafka, "web": {"port": web_port}, "batching": batching or {}})


def machine_state() -> dict[str, Any]:
    """What else the machine is doing: load average, and whether a training process runs."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)  # noqa: S607
    training = [line[:120] for line in ps.stdout.splitlines() if "train" in line and "ps -eo" not in line]
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "training_processes": training,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def spawn(module: str, settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m module` with the run's settings (as GUARDSTREAM_* variables and flags)."""
    kafka = settings.kafka
    command = [sys.executable, "-m", module]
    if module == Process.WORKER:
        command.append("worker")
    elif module in (Process.PASSTHROUGH, Process.NAIVE):
        command += ["--bootstrap-servers", kafka.bootstrap_servers, "--input-topic", kafka.input_topic]
        command += ["--verdicts-topic", kafka.verdicts_topic, "--group-id", kafka.group_id]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(settings)}
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603


def model_seconds(settings: Settings) -> float:
    """The worker's model time so far: `guardstream_model_latency_seconds_sum` on its /metrics."""
    url = f"http://{settings.web.host}:{settings.web.port}/metrics"
    for line in read_metrics(url).splitlines():
        if line.startswith("guardstream_model_latency_seconds_sum"):
            return float(line.split()[-1])
    raise RuntimeError(f"no guardstream_model_latency_seconds_sum at {url}")


class BenchFailed(Exception):
    """A benchmark run that cannot give a figure; its message says why in one line."""


class KeyCounter:
    """Counts verdicts by key (the request id) on every partition of the verdicts topic, from its end."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = AIOKafkaConsumer(
            settings.kafka.verdicts_topic,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.counts: Counter[bytes] = Counter()

    async def start(self) -> None:
        await self._consumer.start()
        deadline = time.monotonic() + 30
        while not self._consumer.assignment() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        for tp in sorted(self._consumer.assignment()):
            await self._consumer.position(tp)

    async def poll(self) -> int:
        batches = await self._consumer.getmany(timeout_ms=50, max_records=20_000)
        n = 0
        for records in batches.values():
            self.counts.update(record.key for record in records)
            n += len(records)
        return n

    async def stop(self) -> None:
        await self._consumer.stop()


async def preloaded_run(
    settings: Settings,
    values: dict[str, bytes],
    start: Callable[[], subprocess.Popen[bytes]],
    busy: bool = False,
    timeout_s: float = 900,
) -> RunFigures:
    """Load `values` onto the input topic, then start the process and time its verdicts."""
    counter = KeyCounter(settings)
    await counter.start()
    await publish(
        settings.kafka.bootstrap_servers,
        settings.kafka.input_topic,
        values.values(),
        (k.encode() for k in values),
    )
    process = start()
    try:
        probe = _busy_probe(settings, process) if busy else None
        return await _count_verdicts(counter, values, timeout_s, probe, process.poll)
    finally:
        await counter.stop()
        process.terminate()
        process.wait(60)


def _busy_probe(settings: Settings, process: subprocess.Popen[bytes]) -> Callable[[], float]:
    wait_ready(settings, process, 120)
    return lambda: model_seconds(settings)


async def _count_verdicts(
    counter: KeyCounter,
    values: dict[str, bytes],
    timeout_s: float,
    probe: Callable[[], float] | None,
    exit_status: Callable[[], int | None] = lambda: None,
) -> RunFigures:
    """Verdicts/s from the first arrival to the last (the first arrival's verdicts not counted).

    `exit_status`: the measured process's, None while it runs; an exit ends the run at once."""
    first = last = 0.0
    at_first = seen = 0
    busy_at_first = 0.0
    deadline = time.monotonic() + timeout_s
    while len(counter.counts) < len(values) and time.monotonic() < deadline:
        got = await counter.poll()
        if not got:
            if (status := exit_status()) is not None:
                raise BenchFailed(f"the measured process exited with status {status} (see its log)")
            continue
        seen += got
        last = time.perf_counter()
        if not first:
            first, at_first = last, seen
            busy_at_first = probe() if probe else 0.0
    busy = (probe() - busy_at_first) / (last - first) if probe and last > first else None
    await asyncio.sleep(1.0)  # late duplicates
    while await counter.poll():
        pass
    keys = {k.encode() for k in values}
    lost = len(keys - counter.counts.keys())
    if lost == len(keys):
        raise BenchFailed(f"none of the {len(values)} verdicts came back within {timeout_s:g} s")
    if last <= first:
        raise BenchFailed(
            f"the {len(counter.counts)} verdicts came back at once, too few to time: raise the count"
        )
    duplicated = sum(1 for k in keys if counter.counts[k] > 1)
    rate = (sum(counter.counts.values()) - at_first) / (last - first)
    return RunFigures(rate, busy, len(values), lost, duplicated)


async def timed_run(
    settings: Settings,
    values: dict[str, bytes],
    timeout_s: float,
    busy_probe: Callable[[], float] | None = None,
) -> RunFigures:
    """Publish to a process already running, then time its verdicts (as `preloaded_run`)."""
    kafka = settings.kafka
    counter = KeyCounter(settings)
    await counter.start()
    try:
        await publish(
            kafka.bootstrap_servers, kafka.input_topic, values.values(), (k.encode() for k in values)
        )
        return await _count_verdicts(counter, values, timeout_s, busy_probe)
    finally:
        await counter.stop()


def write_report(result: dict[str, Any], out: Path, hidden: tuple[str, ...] = ()) -> None:
    """Write a benchmark's result as JSON to `out` and print its fields (but `hidden`), one a line."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        if key not in hidden:
            print(f"{key:32} {value}")
