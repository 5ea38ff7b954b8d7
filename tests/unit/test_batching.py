import numpy as np

from models.base.contract import Encoded
from worker.batching import padded_cost, plan_model_batches


def item(*lengths: int) -> Encoded:
    return Encoded(tuple(np.zeros(n, dtype=np.int64) for n in lengths))


def cost(items: list[Encoded], indices: list[int]) -> int:
    chosen = [items[i] for i in indices]
    return padded_cost(sum(len(c.windows) for c in chosen), max(len(w) for c in chosen for w in c.windows))


def test_every_item_planned_once_and_sorted_by_length() -> None:
    items = [item(n) for n in (50, 3, 20, 7, 3, 90)]
    plan = plan_model_batches(items, max_tokens=10_000, max_requests=100)
    assert sorted(i for batch in plan for i in batch) == list(range(len(items)))
    flat = [i for batch in plan for i in batch]
    assert [len(items[i].windows[0]) for i in flat] == sorted(len(x.windows[0]) for x in items)


def test_token_budget_counts_padding() -> None:
    items = [item(10)] * 4 + [item(40)] * 2
    plan = plan_model_batches(items, max_tokens=80, max_requests=100)
    assert all(cost(items, batch) <= 80 for batch in plan)
    assert [len(b) for b in plan] == [4, 2]


def test_request_limit() -> None:
    plan = plan_model_batches([item(4)] * 10, max_tokens=10_000, max_requests=3)
    assert [len(b) for b in plan] == [3, 3, 3, 1]


def test_an_item_over_budget_gets_a_call_of_its_own() -> None:
    items = [item(5), item(128, 128, 128), item(6)]
    plan = plan_model_batches(items, max_tokens=100, max_requests=10)
    assert [1] in plan
    assert sorted(i for b in plan for i in b) == [0, 1, 2]


def test_empty() -> None:
    assert plan_model_batches([], 100, 10) == []
