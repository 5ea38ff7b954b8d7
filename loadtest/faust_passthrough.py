"""faust-streaming's own limit as a consumer runtime: a faust app doing nothing but pass records on.

    python -m loadtest.faust_passthrough      # settings from GUARDSTREAM_* variables, as the worker

The faust app the worker ran on until its consumer moved to aiokafka (raw topics, `noack_take`
batches of `max_batch_requests` within `max_wait_ms`), and per batch what `loadtest.passthrough`
does: orjson decode, encode, one burst of sends, one wait for the acks, then the acks. Set beside
the plain aiokafka passthrough, it shows what faust's per-event machinery costs on its own (the
reason for the move); only `loadtest.bench_worker` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import faust
import orjson

from worker.config import Settings, load_settings


def build_app(settings: Settings) -> faust.App:
    """A faust app with the worker's Kafka settings: raw-bytes topics, manual acks, no web server."""
    kafka = settings.kafka
    brokers = ";".join(f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(","))
    return faust.App(
        kafka.group_id,
        broker=brokers,
        store="memory://",
        # faust keeps a data directory per app; not in the working directory
        datadir=str(Path(tempfile.gettempdir()) / "guardstream-{conf.name}-data"),
        autodiscover=False,
        web_enabled=False,
        broker_commit_interval=kafka.commit_interval_s,
        consumer_auto_offset_reset=kafka.auto_offset_reset,
        producer_acks=-1,
        stream_wait_empty=False,
        stream_buffer_maxsize=max(4 * settings.batching.max_batch_requests, 256),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
    )


def passthrough_agent(app: faust.App, settings: Settings) -> Any:
    """The agent body: each batch decoded, re-encoded, produced, acked once delivered."""
    batching = settings.batching
    verdicts = settings.kafka.verdicts_topic

    async def run(stream: Any) -> None:
        within = batching.max_wait_ms / 1000 or 0.001
        async for events in stream.noack_take(batching.max_batch_requests, within=within):
            futures = []
            for event in events:
                body = orjson.loads(event.message.value or b"{}")
                out = orjson.dumps({"id": body.get("id"), "verdict": "allow", "scores": {}, "cached": False})
                futures.append(await app.producer.send(verdicts, event.message.key, out, None, None, None))
            await asyncio.gather(*futures)
            for event in events:
                await stream.ack(event)

    return run


def main() -> None:
    settings = load_settings({})
    logging.basicConfig(level=settings.log_level)
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_app(settings)
    source = app.topic(
        settings.kafka.input_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )
    app.agent(source, name="guardstream.passthrough")(passthrough_agent(app, settings))
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()


if __name__ == "__main__":
    main()
