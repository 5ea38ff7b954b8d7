"""The one packer: model calls under the token budget from the model's own costs."""

import numpy as np

from models.base.contract import Cost, Encoded
from models.base.packing import combine, pieces_within, plan_calls
from tests.unit.fakes import KeywordModel


def costs(*longest: int) -> list[Cost]:
    return [Cost(1, n) for n in longest]


def padded(chosen: list[Cost]) -> int:
    return sum(c.rows for c in chosen) * max(c.longest for c in chosen)


def test_every_item_planned_once_and_sorted_by_length() -> None:
    items = costs(50, 3, 20, 7, 3, 90)
    plan = plan_calls(items, max_tokens=10_000, max_items=100, max_padding_ratio=100)
    flat = [i for call in plan for i in call]
    assert sorted(flat) == list(range(len(items)))
    assert [items[i].longest for i in flat] == sorted(c.longest for c in items)


def test_token_budget_counts_padding_and_rows() -> None:
    items = [*costs(10, 10, 10, 10), Cost(2, 40)]
    plan = plan_calls(items, max_tokens=80, max_items=100, max_padding_ratio=100)
    assert all(padded([items[i] for i in call]) <= 80 for call in plan)
    assert [len(call) for call in plan] == [4, 1]


def test_a_call_pads_short_prompts_little() -> None:
    plan = plan_calls(costs(10, 10, 11, 40, 41), max_tokens=10_000, max_items=100)
    assert plan == [[0, 1, 2], [3, 4]]


def test_item_limit() -> None:
    plan = plan_calls(costs(*[4] * 10), max_tokens=10_000, max_items=3)
    assert [len(call) for call in plan] == [3, 3, 3, 1]


def test_empty() -> None:
    assert plan_calls([], 100, 10) == []


def test_a_prompt_over_budget_is_cut_into_pieces_whose_maximum_is_its_score() -> None:
    model = KeywordModel()
    long_item, short = model.encode(["word " * 40, "hello"])
    pieces = pieces_within(model, [long_item, short], max_tokens=16)
    assert [p.owner for p in pieces].count(0) > 1 and [p.owner for p in pieces].count(1) == 1
    assert all(model.cost(p.item).padded <= 16 for p in pieces)
    rows = [np.array([0.1, 0.2 + i], dtype=np.float32) for i in range(len(pieces))]
    combined = combine(2, 2, pieces, rows)
    assert combined[0, 1] == max(r[1] for p, r in zip(pieces, rows, strict=True) if p.owner == 0)


def test_a_prompt_within_budget_stays_whole() -> None:
    model = KeywordModel()
    (item,) = model.encode(["a b c"])
    assert [p.item for p in pieces_within(model, [item], max_tokens=1000)] == [item]
    assert isinstance(item, Encoded)
