"""Merge methods on hand-computed tensors, the architecture check, and the coefficient searches."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from models.merge.methods import disjoint_mean, linear, merge, task_arithmetic, ties, trim_to_density
from models.merge.search import (
    Candidate,
    EvolutionSettings,
    SearchSpace,
    evolution_search,
    fixed_search,
    grid_candidates,
    grid_search,
)
from models.merge.weights import MergeError, ModelWeights, check_same_architecture, first_difference

ENCODER_CONFIG = {"model_type": "bert", "hidden_size": 2, "num_attention_heads": 1}


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def ids() -> torch.Tensor:
    return torch.arange(3, dtype=torch.int64)


def test_linear_is_the_weighted_sum_and_copies_integer_buffers() -> None:
    first = {"w": t(1.0, 2.0, -4.0), "ids": ids()}
    second = {"w": t(3.0, 0.0, 4.0), "ids": ids() + 10}
    merged = linear([first, second], [0.25, 0.75])
    torch.testing.assert_close(merged["w"], t(2.5, 0.5, 2.0))
    assert merged["ids"].dtype == torch.int64 and merged["ids"].tolist() == [0, 1, 2]
    torch.testing.assert_close(linear([first, second], [1.0, 3.0], normalize=True)["w"], t(2.5, 0.5, 2.0))
    torch.testing.assert_close(linear([first, second], [1.0, 3.0])["w"], t(10.0, 2.0, 8.0))


def test_linear_weights_summing_to_zero_cannot_be_normalized() -> None:
    with pytest.raises(MergeError, match="sum to 0"):
        linear([{"w": t(1.0)}, {"w": t(2.0)}], [1.0, -1.0], normalize=True)


def test_task_arithmetic_adds_scaled_task_vectors_to_the_base() -> None:
    base = {"w": t(1.0, 1.0, 1.0), "ids": ids()}
    first = {"w": t(2.0, 1.0, 0.0), "ids": ids() + 5}
    second = {"w": t(1.0, 3.0, 1.0), "ids": ids() + 7}
    merged = task_arithmetic(base, [first, second], [0.5, 2.0])
    # 1 + 0.5 * (1, 0, -1) + 2 * (0, 2, 0)
    torch.testing.assert_close(merged["w"], t(1.5, 5.0, 0.5))
    assert merged["ids"].tolist() == [0, 1, 2]  # from the base
    torch.testing.assert_close(task_arithmetic(base, [first, second], [0.0, 0.0])["w"], base["w"])


#: Task vectors of three parents for TIES. Density 0.6 keeps 3 of the 5 entries of `v` and 3 of
#: the 4 of `m`, each tensor trimmed on its own (one global cut would drop all of `m`).
TAUS = [
    {"v": t(4.0, -1.0, 3.0, 0.5, -2.0), "m": torch.tensor([[0.01, -0.02], [0.03, 0.04]])},
    {"v": t(2.0, 5.0, -1.0, -3.0, -0.2), "m": torch.tensor([[0.02, 0.015], [-0.01, 0.05]])},
    {"v": t(-5.0, 1.0, 2.0, 0.1, -1.0), "m": torch.zeros(2, 2)},
]
BASE = {"v": t(1.0, 1.0, 1.0, 1.0, 1.0), "m": torch.ones(2, 2), "ids": ids()}


def parents_of(
    base: dict[str, torch.Tensor], taus: list[dict[str, torch.Tensor]]
) -> list[dict[str, torch.Tensor]]:
    return [{**{k: base[k] + tau[k] for k in tau}, "ids": ids() + 1} for tau in taus]


def test_trimming_keeps_the_largest_magnitudes_of_each_tensor() -> None:
    torch.testing.assert_close(trim_to_density(TAUS[0]["v"], 0.6), t(4.0, 0.0, 3.0, 0.0, -2.0))
    torch.testing.assert_close(trim_to_density(TAUS[0]["v"], 0.2), t(4.0, 0.0, 0.0, 0.0, 0.0))
    torch.testing.assert_close(trim_to_density(TAUS[0]["v"], 1.0), TAUS[0]["v"])
    torch.testing.assert_close(trim_to_density(TAUS[0]["v"], 0.0), torch.zeros(5))


def test_disjoint_mean_averages_only_entries_agreeing_with_the_elected_sign() -> None:
    vectors = torch.stack([t(4.0, 3.0, 1.0, 0.0), t(2.0, 0.0, -1.0, 0.0), t(-5.0, 2.0, 0.0, 0.0)])
    # sums 1, 5, 0, 0: signs +, +, none, none
    torch.testing.assert_close(disjoint_mean(vectors), t(3.0, 2.5, 0.0, 0.0))


def test_ties_trims_elects_signs_and_takes_the_disjoint_mean() -> None:
    merged = ties(BASE, parents_of(BASE, TAUS), density=0.6)
    # trimmed v: (4, 0, 3, 0, -2), (2, 5, 0, -3, 0), (-5, 0, 2, 0, -1)
    # entry 0: sum 1 -> +, mean of 4 and 2 (sign election: the plain mean would be 1/3)
    # entry 1: only 5 survives trimming (untrimmed, -1 + 5 + 1 would elect + and give 3)
    # entry 2: mean of 3 and 2 over the two that kept it (disjoint mean: not 5/3)
    torch.testing.assert_close(merged["v"], BASE["v"] + t(3.0, 5.0, 2.5, -3.0, -1.5))
    # m trimmed: ((0, -.02), (.03, .04)), ((.02, .015), (0, .05)); [0, 1] sums to -.005 -> -.02
    expected_m = torch.tensor([[0.02, -0.02], [0.03, 0.045]])
    torch.testing.assert_close(merged["m"], BASE["m"] + expected_m)
    assert merged["ids"].tolist() == [0, 1, 2]


def test_ties_weights_and_scale() -> None:
    parents = parents_of(BASE, TAUS)
    without_third = ties(BASE, parents, [1.0, 1.0, 0.0], density=0.6, scale=0.5)
    # trimmed first two: (4, 0, 3, 0, -2), (2, 5, 0, -3, 0)
    torch.testing.assert_close(without_third["v"], BASE["v"] + 0.5 * t(3.0, 5.0, 3.0, -3.0, -2.0))
    weighted = ties(BASE, parents, [1.0, 1.0, 2.0], density=0.6)
    # third doubled: (-10, 0, 4, 0, -2); entry 0 sums to -4 -> -, only -10 agrees
    torch.testing.assert_close(weighted["v"], BASE["v"] + t(-10.0, 5.0, 3.5, -3.0, -2.0))


def test_merge_dispatches_by_name_and_needs_a_base_for_task_vectors() -> None:
    parents = parents_of(BASE, TAUS)
    torch.testing.assert_close(
        merge("ties", BASE, parents, [1.0, 1.0, 1.0], density=0.6)["v"], ties(BASE, parents, density=0.6)["v"]
    )
    torch.testing.assert_close(merge("task_arithmetic", BASE, parents, [1.0, 0.0, 0.0])["v"], parents[0]["v"])
    with pytest.raises(MergeError, match="needs the base"):
        merge("ties", None, parents, [1.0, 1.0, 1.0])
    with pytest.raises(MergeError, match="2 coefficients for 3 parent"):
        merge("task_arithmetic", BASE, parents, [1.0, 1.0])


def model(name: str, tensors: dict[str, torch.Tensor], **encoder: object) -> ModelWeights:
    return ModelWeights(Path(name), {}, {**ENCODER_CONFIG, **encoder}, tensors)


def test_architecture_check_names_the_first_mismatching_key_or_shape_and_the_directories() -> None:
    reference = model("dir-a", {"encoder.a": torch.zeros(2), "head.b": torch.zeros(3)})
    check_same_architecture(
        [reference, model("dir-b", {"encoder.a": torch.ones(2), "head.b": torch.ones(3)})]
    )
    wrong_shape = model("dir-c", {"encoder.a": torch.zeros(2), "head.b": torch.zeros(4)})
    with pytest.raises(
        MergeError, match=r"dir-a and dir-c do not share an architecture: head.b has shape \(3,\)"
    ):
        check_same_architecture([reference, wrong_shape])
    missing = model("dir-d", {"head.b": torch.zeros(3), "head.c": torch.zeros(1)})
    with pytest.raises(MergeError, match=r"dir-d .*encoder\.a is missing from the second"):
        check_same_architecture([reference, missing])
    heads = model("dir-e", dict(reference.tensors), num_attention_heads=2)
    with pytest.raises(MergeError, match=r"dir-e .*encoder num_attention_heads is 1 in the first and 2"):
        check_same_architecture([reference, heads])
    assert first_difference({"x": torch.zeros(1)}, {"x": torch.zeros(1, dtype=torch.float16)}) == (
        "x has dtype torch.float32 in the first and torch.float16 in the second"
    )


def bowl(best: tuple[float, ...], best_density: float | None = None) -> Callable[[Candidate], float]:
    """A known objective: highest (0) at `best`, falling off quadratically."""

    def objective(candidate: Candidate) -> float:
        value = -sum((c - b) ** 2 for c, b in zip(candidate.coefficients, best, strict=True))
        if best_density is not None:
            assert candidate.density is not None
            value -= (candidate.density - best_density) ** 2
        return value

    return objective


def test_grid_search_evaluates_every_point_and_finds_the_optimum() -> None:
    space = SearchSpace("ties", 2, 0.0, 1.0, 0.25, densities=(0.2, 0.5, 0.8))
    seen: list[int] = []
    result = grid_search(space, bowl((0.25, 0.75), 0.5), on_trial=lambda trial: seen.append(trial.index))
    assert len(result.trials) == 5 * 5 * 3 and seen == list(range(75))
    assert result.best.candidate == Candidate("ties", (0.25, 0.75), 0.5)
    assert result.best.score == 0.0
    assert {c.coefficients for c in grid_candidates(space)} == set(
        itertools.product(space.grid_values(), repeat=2)
    )
    assert SearchSpace("linear", 1, -0.5, 1.0, 0.5).grid_values() == [-0.5, 0.0, 0.5, 1.0]


def test_evolution_finds_the_optimum_within_its_budget_and_repeats_with_a_seed() -> None:
    space = SearchSpace("task_arithmetic", 3, 0.0, 1.0)
    objective = bowl((0.3, 0.7, 0.45))
    result = evolution_search(space, objective, budget=150, seed=3)
    assert len(result.trials) == 150
    assert len({t.candidate for t in result.trials}) == 150  # no candidate paid for twice
    assert all(0.0 <= c <= 1.0 for t in result.trials for c in t.candidate.coefficients)
    best = result.best.candidate.coefficients
    assert max(abs(b - o) for b, o in zip(best, (0.3, 0.7, 0.45), strict=True)) <= 0.05
    assert result.best.score > result.trials[0].score  # it improved on the starting point
    again = evolution_search(space, objective, budget=150, seed=3)
    assert [t.candidate for t in again.trials] == [t.candidate for t in result.trials]
    other = evolution_search(space, objective, budget=150, seed=4)
    assert [t.candidate for t in other.trials] != [t.candidate for t in result.trials]


def test_evolution_searches_the_ties_density_and_starts_from_a_given_candidate() -> None:
    space = SearchSpace("ties", 2, 0.0, 1.0, densities=(0.5,))
    start = Candidate("ties", (0.9, 0.1), 0.9)
    settings = EvolutionSettings(population=3, offspring=6)
    result = evolution_search(
        space, bowl((0.6, 0.2), 0.3), budget=120, seed=0, start=start, settings=settings
    )
    assert result.trials[0].candidate == start
    best = result.best.candidate
    assert best.density is not None and abs(best.density - 0.3) <= 0.06
    assert abs(best.coefficients[0] - 0.6) <= 0.06 and abs(best.coefficients[1] - 0.2) <= 0.06


def test_fixed_search_evaluates_the_one_candidate() -> None:
    candidate = Candidate("linear", (0.5, 0.5))
    result = fixed_search(candidate, bowl((0.5, 0.0)))
    assert [t.candidate for t in result.trials] == [candidate] and result.best.score == -0.25
