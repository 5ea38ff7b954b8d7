"""The worker a user would write first, for comparison: one prompt, one model call, one produce.

    python -m loadtest.naive_worker --input-topic T --verdicts-topic V --group-id G

It consumes with aiokafka, scores each prompt alone with the same model, and waits for each
verdict's produce before the next prompt (auto-commit). No batching, no cache, no dead letters:
a bad record is skipped. Only `loadtest.bench_worker` uses it, to measure guardstream's speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker.config import load_settings


async def serve(args: argparse.Namespace) -> None:
    from worker.app import load_guard_model

    model = load_guard_model(load_settings({}))
    policies = model.info.policy_ids
    consumer = AIOKafkaConsumer(
        args.input_topic,
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group_id,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all")
    await consumer.start()
    await producer.start()
    print("ready", flush=True)
    try:
        async for message in consumer:
            try:
                request = orjson.loads(message.value or b"")
                text = str(request["text"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            started = time.perf_counter()
            scores = model.score(model.encode([model.normalize(text)]))[0]
            verdict = {
                "id": request.get("id"),
                "scores": dict(zip(policies, (float(s) for s in scores), strict=True)),
                "latency_ms": (time.perf_counter() - started) * 1000,
            }
            await producer.send_and_wait(args.verdicts_topic, orjson.dumps(verdict), key=message.key)
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--verdicts-topic", required=True)
    parser.add_argument("--group-id", required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
