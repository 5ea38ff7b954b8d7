"""What each prompt costs the worker before any model runs: the per-record budget, stage by stage.

    python -m loadtest.bench_stages [--n 20480] [--batch 1024] [--out loadtest/results/bench-stages.json]

No Kafka, no Redis: each stage of the worker's own code timed on `--n` distinct prompts of
realistic length (the ones `make bench` uses), in batches of `--batch`, on one thread: decoding
a record (orjson + the input contract), normalization, the cache key, tokenization (the served
model's own tokenizer, windows and all) and the cost the packer reads; then the whole pipeline
(`Pipeline.process` + `deliver`) with the stand-in model of `loadtest.standin_worker` (scoring
costs nothing), no cache and a sink that drops what it is given: the ceiling of the worker's
code with no broker or Redis round trip in it. A stage's microseconds per prompt bound what one
core can do: 1e6 / µs prompts/s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadtest.bench_run import machine_state, write_report
from loadtest.bench_worker import make_texts
from loadtest.kafka_client import prompt
from loadtest.standin_worker import StandInBuilder
from models.base.contract import GuardModel
from worker import codec
from worker.app import serving_options
from worker.cache import NullScoreCache, cache_key
from worker.config import Settings, load_settings
from worker.heap import tune_collector
from worker.pipeline import Pipeline
from worker.schema import RawRecord, Request
from worker.sink import KafkaSink


class DroppingBatch:
    """A producer batch that takes every record and keeps none."""

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes, headers: Any) -> object:
        return self

    def close(self) -> None:
        """The sink closes each batch it fills; nothing to do for one that keeps nothing."""


class DroppingProducer:
    """A producer whose every batch is acknowledged at once and goes nowhere (one partition)."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> DroppingBatch:
        return DroppingBatch()

    async def send_batch(self, batch: DroppingBatch, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def per_prompt_us(run: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    run()
    return round(1e6 * (time.perf_counter() - started) / n, 2)


def stage_costs(
    settings: Settings, model: GuardModel, records: list[RawRecord], batch: int
) -> dict[str, float]:
    """Microseconds per prompt of each stage, in the order the worker runs them."""
    info, limits, prefix = model.info, settings.limits, settings.redis.key_prefix
    n = len(records)
    decoded: list[Any] = []
    costs = {
        "decode": per_prompt_us(
            lambda: decoded.extend(codec.decode(r, info.policy_ids, limits) for r in records), n
        )
    }
    texts = [d.text for d in decoded if isinstance(d, Request)]
    normalized: list[str] = []
    costs["normalize"] = per_prompt_us(lambda: normalized.extend(model.normalize(t) for t in texts), n)
    costs["cache_key"] = per_prompt_us(lambda: [cache_key(prefix, info, t) for t in normalized], n)
    encoded: list[Any] = []
    chunks = [normalized[i : i + batch] for i in range(0, n, batch)]

    def tokenize() -> None:
        for chunk in chunks:
            encoded.extend(model.encode(chunk))

    costs["tokenize"] = per_prompt_us(tokenize, n)
    costs["cost"] = per_prompt_us(lambda: [model.cost(e) for e in encoded], n)
    return costs


async def pipeline_rate(
    settings: Settings, model: GuardModel, records: Sequence[RawRecord], batch: int
) -> float:
    """Records/s through process + deliver, one batch at a time, nothing but the worker's code."""
    sink = KafkaSink(DroppingProducer(), settings.kafka, "bench:0")
    pipeline = Pipeline(settings, model, NullScoreCache(), sink)
    try:
        await pipeline.process(records[:batch])  # warm-up
        started = time.perf_counter()
        for i in range(0, len(records), batch):
            result = await pipeline.process(records[i : i + batch])
            await pipeline.deliver(result, started)
        return len(records) / (time.perf_counter() - started)
    finally:
        pipeline.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings({"batching": {"max_batch_requests": args.batch}})
    model = StandInBuilder(serving_options(settings)).reload()
    texts = make_texts(args.n, tag="stages")
    records = [RawRecord("prompts", 0, i, f"s{i}".encode(), prompt(f"s{i}", t)) for i, t in enumerate(texts)]
    tune_collector()  # as the worker does once its model is loaded
    costs = stage_costs(settings, model, records, args.batch)
    rate = asyncio.run(pipeline_rate(settings, model, records, args.batch))
    return {
        "command": "python -m loadtest.bench_stages " + f"--n {args.n} --batch {args.batch}",
        "machine": machine_state(),
        "model": f"{model.info.name}:{model.info.version}",
        "n": args.n,
        "us_per_prompt": costs,
        "us_per_prompt_sum": round(sum(costs.values()), 2),
        "one_core_ceiling_prompts_per_s": round(1e6 / sum(costs.values())),
        "pipeline_records_per_s": round(rate),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20480, help="prompts [20480]")
    parser.add_argument("--batch", type=int, default=1024, help="prompts per batch [1024]")
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest/results/bench-stages.json"), help="result file"
    )
    args = parser.parse_args()
    write_report(run(args), args.out, hidden=("machine",))


if __name__ == "__main__":
    main()
