"""Searches for merge coefficients: a grid, a small (μ+λ) evolution strategy, or one fixed candidate.

The searches know nothing of models: they call an objective (candidate -> score, higher is
better) and keep every trial. A candidate is a method, one coefficient per parent model and,
for TIES, a density.

- grid: every combination of coefficients from `low` to `high` in steps of `step` (and, for
  TIES, every density of `densities`);
- evolution: μ candidates to start (the middle of the range, `start` when given, then uniform
  random draws), then generations of λ offspring, each a copy of a random member of the
  population with Gaussian noise added to every coefficient (and the density), clipped to the
  range and rounded to `resolution`. The best μ of population and offspring survive. The noise
  follows the 1/5 success rule: it grows when more than a fifth of a generation beats its
  parent, shrinks otherwise. Candidates already evaluated are drawn again rather than repaid,
  and the search stops after `budget` evaluations. All draws come from one seeded generator,
  so a seed and an objective give the same trials every time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

STRATEGIES = ("grid", "evolution", "none")


@dataclass(frozen=True)
class Candidate:
    """One merge to try: the method, a coefficient per parent, TIES's density (else None)."""

    method: str
    coefficients: tuple[float, ...]
    density: float | None = None

    def describe(self) -> str:
        text = f"{self.method} [{', '.join(f'{c:g}' for c in self.coefficients)}]"
        return text if self.density is None else f"{text} density {self.density:g}"

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "coefficients": list(self.coefficients), "density": self.density}


@dataclass(frozen=True)
class SearchSpace:
    """Where a method's candidates live. `densities` is empty for a method without a density."""

    method: str
    n_coefficients: int
    low: float = 0.0
    high: float = 1.0
    step: float = 0.25
    densities: tuple[float, ...] = ()
    density_low: float = 0.1
    density_high: float = 1.0
    resolution: float = 0.01

    def __post_init__(self) -> None:
        if self.n_coefficients < 1:
            raise ValueError("a search needs at least one coefficient")
        if not self.low <= self.high:
            raise ValueError(f"empty coefficient range [{self.low}, {self.high}]")
        if self.step <= 0 or self.resolution <= 0:
            raise ValueError("the grid step and the resolution must be positive")

    @property
    def has_density(self) -> bool:
        return bool(self.densities)

    def grid_values(self) -> list[float]:
        """low, low + step, ... up to high (high included when the step lands on it)."""
        count = int(np.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 10) for i in range(count)]

    def snap(self, value: float, low: float, high: float) -> float:
        """`value` clipped to [low, high] and rounded to the resolution."""
        steps = round(float(np.clip(value, low, high)) / self.resolution)
        return round(float(np.clip(steps * self.resolution, low, high)), 10)


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate, in the order of evaluation."""

    index: int
    candidate: Candidate
    score: float


@dataclass
class SearchResult:
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial:
        """The highest score; the earliest trial among equals."""
        if not self.trials:
            raise ValueError("no candidate was evaluated")
        return max(self.trials, key=lambda t: (t.score, -t.index))


Objective = Callable[[Candidate], float]
OnTrial = Callable[[Trial], None]


class _Evaluations:
    """Evaluates each distinct candidate once, keeps the trials, reports each to `on_trial`."""

    def __init__(self, objective: Objective, on_trial: OnTrial | None) -> None:
        self.objective = objective
        self.on_trial = on_trial
        self.result = SearchResult()
        self.scores: dict[Candidate, float] = {}

    def __call__(self, candidate: Candidate) -> float:
        if candidate in self.scores:
            return self.scores[candidate]
        score = float(self.objective(candidate))
        trial = Trial(len(self.result.trials), candidate, score)
        self.result.trials.append(trial)
        self.scores[candidate] = score
        if self.on_trial is not None:
            self.on_trial(trial)
        return score


def grid_candidates(space: SearchSpace) -> list[Candidate]:
    """Every combination of grid values (and densities), in a fixed order."""
    values = space.grid_values()
    densities: Sequence[float | None] = space.densities or (None,)
    return [
        Candidate(space.method, tuple(combo), density)
        for combo in itertools.product(values, repeat=space.n_coefficients)
        for density in densities
    ]


def grid_search(space: SearchSpace, objective: Objective, on_trial: OnTrial | None = None) -> SearchResult:
    """Evaluate the whole grid of `space`."""
    evaluate = _Evaluations(objective, on_trial)
    for candidate in grid_candidates(space):
        evaluate(candidate)
    return evaluate.result


def fixed_search(candidate: Candidate, objective: Objective, on_trial: OnTrial | None = None) -> SearchResult:
    """Evaluate one candidate (no search)."""
    evaluate = _Evaluations(objective, on_trial)
    evaluate(candidate)
    return evaluate.result


@dataclass(frozen=True)
class EvolutionSettings:
    """(μ+λ) settings: population μ, offspring λ per generation, the first noise (a fraction of
    the range), the 1/5-rule factors and its floor, and how many times a child that was already
    evaluated is drawn again before that child is skipped."""

    population: int = 4
    offspring: int = 8
    sigma: float = 0.25
    grow: float = 1.5
    shrink: float = 0.82
    min_sigma: float = 0.02
    redraws: int = 20


def _middle(space: SearchSpace) -> Candidate:
    density = (
        space.snap((space.density_low + space.density_high) / 2, space.density_low, space.density_high)
        if space.has_density
        else None
    )
    centre = space.snap((space.low + space.high) / 2, space.low, space.high)
    return Candidate(space.method, (centre,) * space.n_coefficients, density)


def _random_candidate(space: SearchSpace, rng: np.random.Generator) -> Candidate:
    coefficients = tuple(
        space.snap(float(v), space.low, space.high)
        for v in rng.uniform(space.low, space.high, space.n_coefficients)
    )
    density = (
        space.snap(
            float(rng.uniform(space.density_low, space.density_high)), space.density_low, space.density_high
        )
        if space.has_density
        else None
    )
    return Candidate(space.method, coefficients, density)


def _mutated(parent: Candidate, space: SearchSpace, sigma: float, rng: np.random.Generator) -> Candidate:
    noise = rng.normal(0.0, sigma * (space.high - space.low), space.n_coefficients)
    coefficients = tuple(
        space.snap(c + float(n), space.low, space.high)
        for c, n in zip(parent.coefficients, noise, strict=True)
    )
    density = parent.density
    if density is not None:
        jump = float(rng.normal(0.0, sigma * (space.density_high - space.density_low)))
        density = space.snap(density + jump, space.density_low, space.density_high)
    return replace(parent, coefficients=coefficients, density=density)


def _starting_population(
    space: SearchSpace, size: int, start: Candidate | None, rng: np.random.Generator
) -> list[Candidate]:
    population: list[Candidate] = [] if start is None else [start]
    if _middle(space) not in population:
        population.append(_middle(space))
    for _ in range(size * 20):
        if len(population) >= size:
            break
        drawn = _random_candidate(space, rng)
        if drawn not in population:
            population.append(drawn)
    return population[:size]


def evolution_search(
    space: SearchSpace,
    objective: Objective,
    budget: int,
    seed: int = 0,
    start: Candidate | None = None,
    settings: EvolutionSettings = EvolutionSettings(),
    on_trial: OnTrial | None = None,
) -> SearchResult:
    """A (μ+λ) evolution strategy with at most `budget` evaluations (see the module docstring)."""
    if budget < 1:
        raise ValueError("the evolution budget must be at least 1 evaluation")
    rng = np.random.default_rng(seed)
    evaluate = _Evaluations(objective, on_trial)
    population = _starting_population(space, min(settings.population, budget), start, rng)
    scored = [(evaluate(c), c) for c in population]
    sigma = settings.sigma
    while len(evaluate.result.trials) < budget:
        children: list[tuple[float, Candidate]] = []
        successes = 0
        for _ in range(settings.offspring):
            if len(evaluate.result.trials) >= budget:
                break
            parent_score, parent = scored[int(rng.integers(len(scored)))]
            child = _fresh_child(parent, space, sigma, rng, evaluate.scores, settings.redraws)
            if child is None:
                continue
            score = evaluate(child)
            successes += score > parent_score
            children.append((score, child))
        if not children:
            break  # the neighbourhood is exhausted at this resolution
        sigma = max(
            settings.min_sigma, sigma * (settings.grow if successes * 5 > len(children) else settings.shrink)
        )
        scored = _survivors(scored + children, evaluate.scores, settings.population)
    return evaluate.result


def _fresh_child(
    parent: Candidate,
    space: SearchSpace,
    sigma: float,
    rng: np.random.Generator,
    seen: dict[Candidate, float],
    redraws: int,
) -> Candidate | None:
    for _ in range(redraws):
        child = _mutated(parent, space, sigma, rng)
        if child not in seen:
            return child
    return None


def _survivors(
    scored: list[tuple[float, Candidate]], seen: dict[Candidate, float], size: int
) -> list[tuple[float, Candidate]]:
    order = {c: i for i, c in enumerate(seen)}
    ranked = sorted(scored, key=lambda pair: (-pair[0], order[pair[1]]))
    return ranked[:size]
