"""Acks in each partition's order, whatever order the verdicts are delivered in.

A long prompt's verdict is delivered after the short ones taken with it or after it. Kafka keeps
one committed offset per partition, so an event may be acked (its offset becomes committable)
only once it and every event taken before it in its partition are delivered: `InOrderAcks`
holds the events back until then. A crash re-reads every undelivered record, and never skips one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

E = TypeVar("E")


class InOrderAcks(Generic[E]):
    """Takes events as they are read and as they are delivered; gives back those safe to ack."""

    def __init__(self, partition_of: Callable[[E], Hashable]) -> None:
        self._partition_of = partition_of
        self._queues: dict[Hashable, deque[E]] = {}
        self._delivered: set[int] = set()  # id() of delivered events still held back

    def taken(self, events: Iterable[E]) -> None:
        """Events read from Kafka, in the order read."""
        for event in events:
            self._queues.setdefault(self._partition_of(event), deque()).append(event)

    def delivered(self, events: Iterable[E]) -> list[E]:
        """Mark `events` delivered: the events that may be acked now, in partition order."""
        touched = set()
        for event in events:
            self._delivered.add(id(event))
            touched.add(self._partition_of(event))
        ready: list[E] = []
        for partition in touched:
            queue = self._queues[partition]
            while queue and id(queue[0]) in self._delivered:
                event = queue.popleft()
                self._delivered.discard(id(event))
                ready.append(event)
            if not queue:
                del self._queues[partition]
        return ready

    def held(self) -> int:
        """Events read and not yet safe to ack."""
        return sum(len(queue) for queue in self._queues.values())
