"""The client limit: a plain aiokafka consume -> orjson decode -> encode -> produce loop.

    python -m loadtest.passthrough --input-topic T --verdicts-topic V --group-id G

No model, no cache, no checks: each consumed value is decoded, a small verdict-shaped object is
encoded and produced (one burst of sends per fetched batch, then one wait for their acks, then a
commit). What one Python process with aiokafka moves on this broker is the ceiling any worker
written on the same client can approach; only `loadtest.bench_worker` runs it.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def serve(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(
        args.input_topic,
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all", linger_ms=2)
    await consumer.start()
    await producer.start()
    print("ready", flush=True)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            futures = []
            for records in batches.values():
                for record in records:
                    body = orjson.loads(record.value or b"{}")
                    out = {"id": body.get("id"), "verdict": "allow", "scores": {}, "cached": False}
                    futures.append(
                        await producer.send(args.verdicts_topic, orjson.dumps(out), key=record.key)
                    )
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
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
