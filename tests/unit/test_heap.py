"""The collector tuning the worker applies at start-up."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from worker.heap import YOUNG_GENERATION, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_tuning_freezes_what_is_alive_and_enlarges_the_young_generation() -> None:
    middle, oldest = gc.get_threshold()[1:]
    kept = [object() for _ in range(10)]
    tune_collector()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (YOUNG_GENERATION, middle, oldest)


@pytest.mark.usefixtures("restored_collector")
def test_frozen_objects_are_still_freed_by_reference_counting() -> None:
    class Node:
        pass

    freed: list[str] = []
    node = Node()
    weakref.finalize(node, freed.append, "node")
    tune_collector()
    del node
    assert freed == ["node"]
