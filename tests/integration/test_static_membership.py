"""Static group membership (GUARDSTREAM_KAFKA__GROUP_INSTANCE_ID) against the real broker.

DescribeGroups shows it: a static member's id starts with its instance id, and a static member
that shuts down stays in the group (with its partitions) until its session times out, so a
worker restarted under the same name rejoins without a rebalance. A dynamic member leaves.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient

from loadtest.kafka_client import Collector, prompt, publish
from tests.integration.conftest import KAFKA, Topics, WorkerProcess

#: Long enough for a restart to come back within the session.
SESSION_TIMEOUT_S = "30"


async def group_members(group: str) -> tuple[str, list[str]]:
    """The group's state and member ids."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [(error, _group, state, _protocol_type, _protocol, members, *_)] = response.groups
    assert error == 0
    return state, [member[0] for member in members]


async def test_a_static_member_keeps_its_place_across_a_restart(
    worker_factory: Callable[..., WorkerProcess], topics: Topics
) -> None:
    instance = "guardstream-0"
    worker = worker_factory(
        GUARDSTREAM_KAFKA__GROUP_INSTANCE_ID=instance, GUARDSTREAM_KAFKA__SESSION_TIMEOUT_S=SESSION_TIMEOUT_S
    )
    worker.start()
    state, members = await group_members(topics.group)
    assert state == "Stable" and len(members) == 1 and members[0].startswith(f"{instance}-"), members
    assert worker.signal_and_wait(signal.SIGTERM) == 0

    # Shut down, but still a member: its partitions wait for it instead of moving.
    assert await group_members(topics.group) == ("Stable", members)

    worker.start()
    state, again = await group_members(topics.group)
    assert state == "Stable" and len(again) == 1 and again[0].startswith(f"{instance}-"), again
    collector = Collector(KAFKA, topics.verdicts, topics.dlq)
    await collector.start()
    batch = {f"s-{i}": prompt(f"s-{i}", f"Summarize chapter {i} of the book.") for i in range(6)}
    await publish(KAFKA, topics.prompts, batch.values())
    assert await collector.wait_for(set(batch), 0, timeout_s=60), worker.log_tail()
    await collector.stop()
    assert worker.signal_and_wait(signal.SIGTERM) == 0


async def test_a_dynamic_member_leaves_on_shutdown(
    worker_factory: Callable[..., WorkerProcess], topics: Topics
) -> None:
    worker = worker_factory(GUARDSTREAM_KAFKA__SESSION_TIMEOUT_S=SESSION_TIMEOUT_S)
    worker.start()
    state, members = await group_members(topics.group)
    assert state == "Stable" and len(members) == 1 and not members[0].startswith("guardstream-")
    assert worker.signal_and_wait(signal.SIGTERM) == 0
    assert await group_members(topics.group) == ("Empty", [])
