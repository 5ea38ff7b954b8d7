r"""Merge methods on flat name -> tensor dicts (`models.merge.weights`).

Every floating-point tensor is merged; any other tensor (an integer buffer such as position ids)
is copied from the base, or from the first model when there is no base. θᵢ are the parents'
tensors, θ_base the base's (the model the parents were fine-tuned from), τᵢ = θᵢ - θ_base their
task vectors.

- linear: Σ wᵢ θᵢ, the weights as given (or scaled to sum to 1 with `normalize`);
- task arithmetic: θ_base + Σ λᵢ τᵢ;
- TIES: each τᵢ trimmed to its `density` fraction of entries of largest magnitude (per tensor)
  and weighted, t̂ᵢ = λᵢ · trim(τᵢ); per entry, the elected sign is the sign of Σ t̂ᵢ, and the
  merged vector is the mean of the nonzero t̂ᵢ entries whose sign agrees with it (the "disjoint
  mean": entries that were trimmed or disagree take no part; an entry no parent keeps is 0);
  the result is θ_base + scale · merged. With every λᵢ = 1 this is the TIES-merging procedure;
  λᵢ = 0 leaves a parent out entirely.

Arithmetic is done in float32 and the result cast back to each tensor's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from models.merge.weights import MergeError, Weights

METHODS = ("linear", "task_arithmetic", "ties")
#: Methods that start from a base model.
BASED_METHODS = frozenset({"task_arithmetic", "ties"})

Combine = Callable[[str], torch.Tensor]


def _merged(reference: Mapping[str, torch.Tensor], combine: Combine) -> Weights:
    """`combine(name)` for every floating tensor of `reference`; a copy of the others."""
    out: Weights = {}
    for name, tensor in reference.items():
        if tensor.is_floating_point():
            out[name] = combine(name).to(tensor.dtype).contiguous()
        else:
            out[name] = tensor.clone()
    return out


def _check_count(parents: Sequence[Mapping[str, torch.Tensor]], coefficients: Sequence[float]) -> None:
    if not parents:
        raise MergeError("nothing to merge: no parent models")
    if len(coefficients) != len(parents):
        raise MergeError(f"{len(coefficients)} coefficients for {len(parents)} parent models")


def normalized(weights: Sequence[float]) -> list[float]:
    """The weights scaled to sum to 1."""
    total = math.fsum(weights)
    if total == 0:
        raise MergeError("the weights sum to 0: they cannot be normalized")
    return [w / total for w in weights]


def linear(
    parents: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], normalize: bool = False
) -> Weights:
    """Σ wᵢ θᵢ."""
    _check_count(parents, weights)
    used = normalized(weights) if normalize else list(weights)

    def combine(name: str) -> torch.Tensor:
        return sum(
            (w * p[name].float() for w, p in zip(used, parents, strict=True)),
            torch.zeros_like(parents[0][name], dtype=torch.float32),
        )

    return _merged(parents[0], combine)


def task_arithmetic(
    base: Mapping[str, torch.Tensor], parents: Sequence[Mapping[str, torch.Tensor]], lambdas: Sequence[float]
) -> Weights:
    """θ_base + Σ λᵢ (θᵢ - θ_base)."""
    _check_count(parents, lambdas)

    def combine(name: str) -> torch.Tensor:
        start = base[name].float()
        return start + sum(
            (lam * (p[name].float() - start) for lam, p in zip(lambdas, parents, strict=True)),
            torch.zeros_like(start),
        )

    return _merged(base, combine)


def trim_to_density(delta: torch.Tensor, density: float) -> torch.Tensor:
    """`delta` with all but its ⌈density · size⌉ entries of largest magnitude set to 0."""
    if not 0.0 <= density <= 1.0:
        raise MergeError(f"density must be within [0, 1], not {density}")
    size = delta.numel()
    keep = min(size, math.ceil(density * size))
    if keep >= size:
        return delta.clone()
    flat = delta.reshape(-1)
    trimmed = torch.zeros_like(flat)
    if keep > 0:
        kept = torch.topk(flat.abs(), keep, sorted=False).indices
        trimmed[kept] = flat[kept]
    return trimmed.reshape(delta.shape)


def disjoint_mean(vectors: torch.Tensor) -> torch.Tensor:
    """Per entry of stacked vectors [n, ...]: the mean of the nonzero entries agreeing with the
    sign of their sum (0 where the sum is 0)."""
    elected = torch.sign(vectors.sum(dim=0))
    agrees = (torch.sign(vectors) == elected) & (vectors != 0)
    counts = agrees.sum(dim=0).clamp(min=1)
    return (vectors * agrees).sum(dim=0) / counts


def ties(
    base: Mapping[str, torch.Tensor],
    parents: Sequence[Mapping[str, torch.Tensor]],
    lambdas: Sequence[float] | None = None,
    density: float = 1.0,
    scale: float = 1.0,
) -> Weights:
    """θ_base + scale · disjoint mean of λᵢ · trim(θᵢ - θ_base) (see the module docstring)."""
    used = [1.0] * len(parents) if lambdas is None else list(lambdas)
    _check_count(parents, used)

    def combine(name: str) -> torch.Tensor:
        start = base[name].float()
        vectors = torch.stack(
            [
                lam * trim_to_density(p[name].float() - start, density)
                for lam, p in zip(used, parents, strict=True)
            ]
        )
        return start + scale * disjoint_mean(vectors)

    return _merged(base, combine)


def merge(
    method: str,
    base: Mapping[str, torch.Tensor] | None,
    parents: Sequence[Mapping[str, torch.Tensor]],
    coefficients: Sequence[float],
    density: float | None = None,
    scale: float = 1.0,
    normalize: bool = False,
) -> Weights:
    """One merge by name: `linear` (coefficients = weights), `task_arithmetic` or `ties` (= λᵢ)."""
    if method == "linear":
        return linear(parents, coefficients, normalize)
    if method not in BASED_METHODS:
        raise MergeError(f"unknown merge method {method!r} (one of {', '.join(METHODS)})")
    if base is None:
        raise MergeError(f"{method} needs the base model the parents were fine-tuned from (--base)")
    if method == "task_arithmetic":
        return task_arithmetic(base, parents, coefficients)
    return ties(base, parents, coefficients, 1.0 if density is None else density, scale)
