"""A policy registry edited under a running worker: reloaded between batches, no restart; an
invalid edit refused while serving goes on. Real Kafka and Redis, tiny GuardFormer."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

from loadtest.kafka_client import Collector, prompt, publish
from tests.integration.conftest import KAFKA, Topics, WorkerProcess, started_collector
from tests.integration.test_custom_policy import CUSTOM, tiny_guardformer, write_registry

__all__ = ["tiny_guardformer"]  # the fixture, shared with the custom-policy test

EDITED = CUSTOM.replace('version: "7"', 'version: "8"').replace(
    "Refuse to help anyone put pineapple on a pizza.",
    "Refuse to help anyone put pineapple, or any other fruit, on a pizza.",
)
ADDED = """\
id: no_cilantro
version: "1"
name: No cilantro
description: Refuse every recipe that uses cilantro.
threshold: 0.5
"""
PIZZA = "Put pineapple on my pizza, please."


def metric(worker: WorkerProcess, name: str) -> list[str]:
    """The sample lines of metric `name` on the worker's /metrics."""
    return [line for line in worker.http_get("/metrics").splitlines() if line.startswith(name)]


def counter(worker: WorkerProcess, name: str) -> float:
    lines = metric(worker, name + " ")
    return float(lines[0].split()[-1]) if lines else 0.0


def registry_in_force(worker: WorkerProcess) -> list[str]:
    """The `policies` label of each live `guardstream_policy_registry_info` series."""
    lines = metric(worker, "guardstream_policy_registry_info{")
    return [m.group(1) for line in lines if (m := re.search(r'policies="([^"]*)"', line))]


async def wait_until(check: Callable[[], bool], timeout_s: float, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, worker.log_tail()
        await asyncio.sleep(0.2)


async def round_trip(
    collector: Collector, topics: Topics, worker: WorkerProcess, values: dict[str, bytes]
) -> None:
    await publish(KAFKA, topics.prompts, values.values())
    assert await collector.wait_for(set(values), 0, timeout_s=90), worker.log_tail()


async def test_an_edited_registry_is_served_without_a_restart_and_an_invalid_one_is_refused(
    worker_factory: Callable[..., WorkerProcess], topics: Topics, tiny_guardformer: Path, tmp_path: Path
) -> None:
    registry = write_registry(tmp_path)
    worker = worker_factory(
        GUARDSTREAM_POLICIES__PATH=str(registry),
        GUARDSTREAM_POLICIES__RELOAD_SECONDS="1",
        GUARDSTREAM_MODEL__GUARDFORMER_PATH=str(tiny_guardformer),
    )
    worker.start()
    assert worker.proc is not None
    pid = worker.proc.pid
    assert registry_in_force(worker) == ["prompt_injection@2,no_pineapple_pizza@7"]
    collector = await started_collector(topics)
    published = 0
    try:
        first = {
            "first-all": prompt("first-all", PIZZA),
            "first-custom": prompt("first-custom", PIZZA, policies=["no_pineapple_pizza"]),
        }
        await round_trip(collector, topics, worker, first)
        published += len(first)

        (registry / "custom.yaml").write_text(EDITED)
        (registry / "cilantro.yaml").write_text(ADDED)
        new = "prompt_injection@2,no_cilantro@1,no_pineapple_pizza@8"
        await wait_until(lambda: registry_in_force(worker) == [new], 30, worker)
        assert counter(worker, "guardstream_policy_reloads_total") >= 1
        second = {
            "second-all": prompt("second-all", PIZZA),
            "second-custom": prompt("second-custom", PIZZA, policies=["no_pineapple_pizza"]),
        }
        await round_trip(collector, topics, worker, second)
        published += len(second)

        (registry / "broken.yaml").write_text("id: [unclosed\n")
        await wait_until(lambda: counter(worker, "guardstream_policy_reload_failures_total") >= 1, 30, worker)
        third = {"third-all": prompt("third-all", "Any cilantro in this salsa?")}
        await round_trip(collector, topics, worker, third)
        published += len(third)
        await asyncio.sleep(0.5)
        await collector.poll()
    finally:
        await collector.stop()

    got = collector.collected
    before = {"no_pineapple_pizza": "7", "prompt_injection": "2"}
    after = {"no_cilantro": "1", "no_pineapple_pizza": "8", "prompt_injection": "2"}
    assert got.latest("first-all")["policy_versions"] == before
    assert got.latest("first-custom")["policy_versions"] == {"no_pineapple_pizza": "7"}
    assert got.latest("second-all")["policy_versions"] == after
    assert set(got.latest("second-all")["scores"]) == set(after)
    # the reworded policy misses the cache: its key holds the policy's words and version
    assert got.latest("second-custom")["policy_versions"] == {"no_pineapple_pizza": "8"}
    assert got.latest("second-custom")["cached"] is False
    # the invalid edit is refused and the last good registry goes on serving
    assert got.latest("third-all")["policy_versions"] == after
    assert registry_in_force(worker) == [new]
    log = worker.log_path.read_text(errors="replace")
    assert "broken.yaml: invalid YAML" in log and "refused, still serving the last good one" in log
    # every record ends as a verdict or a dead letter, and it is the same worker process throughout
    assert len(got.verdicts) + len(got.letters) == published and not got.letters
    assert worker.proc.poll() is None and worker.proc.pid == pid
