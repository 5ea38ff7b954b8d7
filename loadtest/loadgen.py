"""guardstream loadtest: an open-loop load test of guardstream workers through the real Kafka.

Records are sent on a fixed schedule: the rate climbs linearly from 0 to --rate prompts/s over
--ramp-s seconds, then holds until --duration-s. The generator never waits for verdicts, so a
slow worker builds up lag (and latency) instead of slowing the load down. If the generator
itself cannot send on time (its producer's buffer is full, the machine is busy), the delay is
reported as "generator lag" in the progress lines and the report.

The mix (shares of all records; the rest are unique prompts):
  --repeat-share   prompts drawn from a pool of --pool-size texts with a Zipf(--zipf-s)
                   distribution, so popular texts repeat: cache hits after their first use
  --long-share     long prompts (~1000 words: several model windows)
  --bad-share      bad records, evenly split: invalid JSON, invalid UTF-8, missing `text`,
                   and a text over the worker's max_text_chars; each must become a dead letter
                   with its reason (invalid_json, invalid_utf8, schema, too_large)

Every record's key and `id` are a run-unique id; the generator keeps each id's send time and
expected outcome. A collector reads the verdicts and dead-letter topics and reports:
  throughput        verdicts/s from the first verdict to the last
  latency           produce -> verdict: from the moment the generator hands the record to its
                    producer to the verdict record's Kafka timestamp (stamped by the worker's
                    producer as it sends the verdict; one machine's clock for both ends),
                    p50/p95/p99/max from an HDR histogram
  cache hit ratio   share of verdicts with `cached: true`
  dead letters      by reason; "wrong_outcome" counts records whose outcome is not the expected one
  lost              ids with neither a verdict nor a dead letter when the grace period
                    (--grace-s after the last send) ends
  duplicated        ids with more than one outcome (allowed: delivery is at least once)
Outcomes that arrive after the grace period are not counted.

Workers: by default it starts --workers N worker processes (logs in .local/) on fresh
run-unique topics and consumer group (unless --input-topic is given), and stops them (SIGTERM)
at the end. With --no-worker it targets workers already running on the configured topics.

Output: loadtest-<run>.json (config, summary, generator lag, per-second timeline) and
loadtest-<run>.png (latency percentiles and throughput per second) in --out
[loadtest/results]. Exit status 0 when nothing was lost and every outcome was the expected
one, 1 otherwise. Needs Kafka and Redis running (deploy/local/services.sh start).

Example: guardstream loadtest --rate 150 --duration-s 60 --ramp-s 10 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from loadtest.demo import REPO_ROOT, start_worker, wait_ready
from loadtest.kafka_client import Collector
from loadtest.ledger import Ledger
from loadtest.mix import MixConfig, RecordFactory
from loadtest.plot import plot_title, write_plot
from loadtest.schedule import LagStats, Schedule, SystemClock, run_open_loop
from loadtest.worker_metrics import scrape, summarize
from worker.config import Settings

#: Largest record the generator's producer sends (the oversized prompts are ~110 kB).
PRODUCER_MAX_REQUEST_BYTES = 1_048_576


class LedgerCollector(Collector):
    """A collector that accounts for each verdict and dead letter instead of keeping them."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        kafka = settings.kafka
        super().__init__(kafka.bootstrap_servers, kafka.verdicts_topic, kafka.dlq_topic)
        self._ledger = ledger

    def on_record(self, is_verdict: bool, record: Any) -> None:
        body = orjson.loads(record.value)
        at_ms = float(record.timestamp)
        if is_verdict:
            self._ledger.record_verdict(str(body["id"]), bool(body.get("cached")), at_ms)
            return
        key = record.key.decode("utf-8", "replace") if record.key else None
        self._ledger.record_letter(key, str(body.get("reason")), at_ms)


class KafkaSender:
    """Hands record i to the producer (without waiting for the broker) and books it as sent."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, factory: RecordFactory, ledger: Ledger
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._factory = factory
        self._ledger = ledger

    async def send(self, index: int) -> object:
        record = self._factory.make(index)
        self._ledger.record_sent(
            record.id, time.time() * 1000, record.kind.value, record.expected_reason, record.first_use
        )
        try:
            future = await self._producer.send(self._topic, record.value, key=record.id.encode())
        except Exception as exc:  # noqa: BLE001 - counted in the report, the load goes on
            self._ledger.record_send_failure(record.id, type(exc).__name__)
            return None
        future.add_done_callback(lambda done: self._delivered(record.id, done))
        return future

    def _delivered(self, record_id: str, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            error = "cancelled" if done.cancelled() else type(done.exception()).__name__
            self._ledger.record_send_failure(record_id, error)


def build_parser() -> argparse.ArgumentParser:
    from worker.cli import _add_settings_flags

    parser = argparse.ArgumentParser(
        prog="guardstream loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load = parser.add_argument_group("load")
    load.add_argument("--rate", type=float, default=100.0, help="target prompts/s after the ramp [100]")
    load.add_argument("--duration-s", type=float, default=60.0, help="sending time, ramp included [60]")
    load.add_argument("--ramp-s", type=float, default=10.0, help="linear ramp from 0 to --rate [10]")
    load.add_argument(
        "--grace-s", type=float, default=60.0, help="wait for outcomes after the last send [60]"
    )
    load.add_argument("--seed", type=int, default=0, help="random seed of the mix [0]")
    mix = parser.add_argument_group("mix (shares of all records; the rest are unique prompts)")
    mix.add_argument("--repeat-share", type=float, default=0.3, help="Zipf repeats from the pool [0.3]")
    mix.add_argument("--pool-size", type=int, default=1000, help="distinct texts of the repeats [1000]")
    mix.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of the repeats [1.1]")
    mix.add_argument("--long-share", type=float, default=0.02, help="long prompts, several windows [0.02]")
    mix.add_argument("--bad-share", type=float, default=0.02, help="records that must be dead letters [0.02]")
    run = parser.add_argument_group("workers and output")
    run.add_argument("--workers", type=int, default=1, help="worker processes to start [1]")
    run.add_argument("--no-worker", action="store_true", help="target workers already running")
    run.add_argument("--web-port-base", type=int, default=8190, help="health port of worker i: base + i")
    run.add_argument("--out", type=Path, default=Path("loadtest/results"), help="report directory")
    run.add_argument("--progress-s", type=float, default=5.0, help="seconds between progress lines [5]")
    _add_settings_flags(parser)
    return parser


def run_settings(args: argparse.Namespace, run_id: str) -> Settings:
    """The settings flags; fresh topics and group for a run with its own workers."""
    from worker.cli import settings_from_args

    if not args.no_worker and args.input_topic is None:
        args.input_topic = f"lt-{run_id}.prompts"
        args.verdicts_topic = args.verdicts_topic or f"lt-{run_id}.verdicts"
        args.dlq_topic = args.dlq_topic or f"lt-{run_id}.dlq"
        args.group_id = args.group_id or f"lt-{run_id}"
    settings: Settings = settings_from_args(args)
    return settings


def start_workers(
    settings: Settings, count: int, port_base: int, run_id: str
) -> list[subprocess.Popen[bytes]]:
    workers = []
    for index in range(count):
        web = settings.web.model_copy(update={"port": port_base + index})
        worker_settings = settings.model_copy(update={"web": web})
        log_path = REPO_ROOT / ".local" / f"loadtest-{run_id}-worker-{index}.log"
        print(f"starting worker {index} (log: {log_path}) ...", flush=True)
        workers.append(start_worker(worker_settings, log_path))
    for index, worker in enumerate(workers):
        web = settings.web.model_copy(update={"port": port_base + index})
        wait_ready(settings.model_copy(update={"web": web}), worker, 180)
    return workers


def worker_metrics_urls(settings: Settings, count: int, port_base: int) -> list[str]:
    return [f"http://{settings.web.host}:{port_base + index}/metrics" for index in range(count)]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> list[int]:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    return [worker.wait(timeout=120) for worker in workers]


async def print_progress(
    ledger: Ledger, schedule: Schedule, lag: LagStats, started: float, every_s: float
) -> None:
    """A line every `every_s` seconds while the test runs."""
    previous_outcomes, previous_time = 0, started
    while True:
        await asyncio.sleep(every_s)
        now = time.monotonic()
        outcomes = sum(ledger.outcomes.values())
        rate = (outcomes - previous_outcomes) / (now - previous_time)
        previous_outcomes, previous_time = outcomes, now
        p99 = ledger.latency_summary().get("p99_ms", 0.0)
        elapsed = now - started
        print(
            f"[{elapsed:6.1f}s] sent {lag.sent}/{schedule.count} (target {schedule.rate_at(elapsed):.0f}/s)"
            f" | outcomes {outcomes} ({rate:.0f}/s) | p99 {p99:.0f} ms"
            f" | awaiting {len(ledger.sent) - len(ledger.outcomes)}"
            f" | generator lag max {lag.max_lag_s * 1000:.0f} ms, {lag.late} late",
            flush=True,
        )


async def poll_until(collector: Collector, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await collector.poll(100)


async def wait_for_outcomes(ledger: Ledger, grace_s: float) -> float:
    """Wait until every sent record has an outcome or the grace period ends; the time waited."""
    started = time.monotonic()
    while not ledger.complete() and time.monotonic() - started < grace_s:  # noqa: ASYNC110 - a poll
        await asyncio.sleep(0.2)
    await asyncio.sleep(min(2.0, grace_s))  # a duplicate right behind the last outcome
    return time.monotonic() - started


async def run_load(args: argparse.Namespace, settings: Settings, run_id: str) -> dict[str, Any]:
    """Send on schedule, collect, and return the report."""
    kafka = settings.kafka
    schedule = Schedule(args.rate, args.duration_s, args.ramp_s)
    mix = MixConfig(args.repeat_share, args.long_share, args.bad_share, args.pool_size, args.zipf_s)
    ledger = Ledger(start_ms=time.time() * 1000)
    collector = LedgerCollector(settings, ledger)
    await collector.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
    )
    await producer.start()
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_until(collector, stop))
    lag = LagStats()
    started = time.monotonic()
    ledger.start_ms = time.time() * 1000
    progress = asyncio.create_task(print_progress(ledger, schedule, lag, started, args.progress_s))
    try:
        sender = KafkaSender(producer, kafka.input_topic, RecordFactory(run_id, mix, args.seed), ledger)
        await run_open_loop(schedule, sender.send, SystemClock(), stats=lag)
        send_seconds = time.monotonic() - started
        await producer.flush()
        print(
            f"all {lag.sent} records sent in {send_seconds:.1f} s; waiting up to {args.grace_s:g} s",
            flush=True,
        )
        waited = await wait_for_outcomes(ledger, args.grace_s)
    finally:
        progress.cancel()
        stop.set()
        await poller
        await producer.stop()
        await collector.stop()
    return {
        "summary": ledger.summary(),
        "generator": {
            "target_records": schedule.count,
            "send_seconds": round(send_seconds, 3),
            "lag": lag.summary(),
        },
        "waited_for_outcomes_s": round(waited, 2),
        "complete": ledger.complete(),
        "timeline": ledger.timeline(),
    }


def run_config(
    args: argparse.Namespace, argv: list[str], settings: Settings, run_id: str, workers: int
) -> dict[str, Any]:
    kafka = settings.kafka
    return {
        "run_id": run_id,
        "command": " ".join(["guardstream loadtest", *argv]),
        "rate": args.rate,
        "duration_s": args.duration_s,
        "ramp_s": args.ramp_s,
        "grace_s": args.grace_s,
        "mix": {
            "repeat_share": args.repeat_share,
            "pool_size": args.pool_size,
            "zipf_s": args.zipf_s,
            "long_share": args.long_share,
            "bad_share": args.bad_share,
            "seed": args.seed,
        },
        "workers": workers,
        "batching": settings.batching.model_dump(),
        "model_threads": settings.model.intra_op_threads,
        "topics": {"input": kafka.input_topic, "verdicts": kafka.verdicts_topic, "dlq": kafka.dlq_topic},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


def print_summary(report: dict[str, Any], json_path: Path, png_path: Path) -> None:
    summary = report["summary"]
    latency = summary["latency_produce_to_verdict"]
    lag = report["generator"]["lag"]
    lines = [
        f"sent {summary['sent']}: verdicts {summary['verdicts']}, "
        f"dead letters {summary['dead_letters_by_reason']}",
        f"lost {summary['lost']}, duplicated {summary['duplicated']}, "
        f"wrong outcome {summary['wrong_outcome']}, send failures {summary['send_failures']}",
        f"throughput {summary['throughput_verdicts_per_s']} verdicts/s, "
        f"cache hit ratio {summary['cache_hit_ratio']}",
        "latency produce -> verdict: "
        + (", ".join(f"{k} {v}" for k, v in latency.items() if k.endswith("_ms")) or "no verdicts"),
        f"generator lag: max {lag['max_lag_ms']} ms, p99 {lag['p99_lag_ms']} ms, {lag['late_records']} late",
        *_stage_lines(report.get("worker_stages")),
        f"report: {json_path}",
        f"plot:   {png_path}",
    ]
    print("\n" + "\n".join(lines))


def _stage_lines(stages: dict[str, Any] | None) -> list[str]:
    if not stages:
        return []
    if "error" in stages:
        return [str(stages["error"])]
    return ["inside the workers (their /metrics):", summarize(stages)]


def run_loadtest(argv: list[str]) -> tuple[dict[str, Any], Path]:
    """Run one load test from its command-line arguments; the report and the path it was written to."""
    args = build_parser().parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    settings = run_settings(args, run_id)
    count = 0 if args.no_worker else args.workers
    workers = start_workers(settings, count, args.web_port_base, run_id) if count else []
    try:
        report = asyncio.run(run_load(args, settings, run_id))
        if workers:  # before they stop: their own view of where the time went
            report["worker_stages"] = scrape(worker_metrics_urls(settings, count, args.web_port_base))
    finally:
        exits = stop_workers(workers)
    report = {"config": run_config(args, argv, settings, run_id, count), "worker_exit_codes": exits, **report}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"loadtest-{run_id}.json", args.out / f"loadtest-{run_id}.png"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    write_plot(report["timeline"], plot_title(report["config"]), png_path)
    print_summary(report, json_path, png_path)
    return report, json_path


def main(argv: list[str] | None = None) -> int:
    report, _ = run_loadtest(sys.argv[1:] if argv is None else argv)
    summary = report["summary"]
    return 0 if summary["lost"] == 0 and not summary["wrong_outcome"] else 1


if __name__ == "__main__":
    sys.exit(main())
