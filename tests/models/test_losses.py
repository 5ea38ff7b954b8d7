"""The metric-learning losses: values on known geometry, skipped anchors, gradients, and training."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from models.train.losses import (
    batch_hard_triplet_loss,
    contrastive_loss,
    pairwise_distances,
    triplet_loss,
)

Loss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
LOSSES: dict[str, tuple[Loss, float]] = {
    "triplet": (triplet_loss, 0.5),
    "batch_hard": (batch_hard_triplet_loss, 0.5),
    "contrastive": (contrastive_loss, 1.0),
}
ALL = pytest.mark.parametrize("name", list(LOSSES))


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def separated() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes at opposite poles of the sphere (distance 2 apart, 0 within)."""
    pole = torch.tensor([[1.0, 0.0, 0.0]])
    return torch.cat([pole.repeat(3, 1), -pole.repeat(3, 1)]), torch.tensor([0, 0, 0, 1, 1, 1])


def overlapping(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random unit vectors whose labels carry no geometry."""
    generator = torch.Generator().manual_seed(seed)
    return unit(torch.randn(12, 8, generator=generator)), torch.tensor([0, 1, 2] * 4)


def test_pairwise_distances_are_euclidean_between_unit_vectors() -> None:
    x, _ = overlapping()
    expected = torch.cdist(x, x)
    assert torch.allclose(pairwise_distances(x), expected, atol=1e-5)


@ALL
def test_zero_for_well_separated_clusters(name: str) -> None:
    loss, margin = LOSSES[name]
    x, labels = separated()
    assert float(loss(x, labels, margin)) < 1e-6


@ALL
def test_positive_for_overlapping_clusters(name: str) -> None:
    loss, margin = LOSSES[name]
    x, labels = overlapping()
    assert float(loss(x, labels, margin)) > 0.05


def brute_force_batch_all(x: torch.Tensor, labels: list[int], margin: float) -> float:
    """Mean hinge over the active triplets, by explicit loops."""
    d = torch.cdist(x, x)
    active = []
    for a, p, n in itertools.product(range(len(labels)), repeat=3):
        if a != p and labels[a] == labels[p] and labels[a] != labels[n]:
            hinge = float(d[a, p] - d[a, n]) + margin
            if hinge > 0:
                active.append(hinge)
    return sum(active) / len(active)


def brute_force_batch_hard(x: torch.Tensor, labels: list[int], margin: float) -> float:
    d = torch.cdist(x, x)
    hinges = []
    for a in range(len(labels)):
        positives = [float(d[a, p]) for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        negatives = [float(d[a, n]) for n in range(len(labels)) if labels[n] != labels[a]]
        if positives and negatives:
            hinges.append(max(0.0, max(positives) - min(negatives) + margin))
    return sum(hinges) / len(hinges)


def test_batch_all_matches_explicit_triplets_and_skips_lonely_anchors() -> None:
    # Row 4 is the only one of class 2: it is a negative for the others but never an anchor.
    x = unit(torch.randn(5, 6, generator=torch.Generator().manual_seed(1)))
    labels = [0, 0, 1, 1, 2]
    got = float(triplet_loss(x, torch.tensor(labels), 0.5))
    assert got == pytest.approx(brute_force_batch_all(x, labels, 0.5), rel=1e-5)


def test_batch_hard_matches_explicit_anchors_and_skips_lonely_anchors() -> None:
    x = unit(torch.randn(5, 6, generator=torch.Generator().manual_seed(2)))
    labels = [0, 0, 1, 1, 2]
    got = float(batch_hard_triplet_loss(x, torch.tensor(labels), 0.5))
    assert got == pytest.approx(brute_force_batch_hard(x, labels, 0.5), rel=1e-5)


def test_contrastive_matches_explicit_pairs() -> None:
    x = unit(torch.randn(4, 6, generator=torch.Generator().manual_seed(3)))
    labels = [0, 0, 1, 2]
    d = torch.cdist(x, x)
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    expected = sum(
        0.5 * (float(d[i, j]) ** 2 if labels[i] == labels[j] else max(0.0, 1.0 - float(d[i, j])) ** 2)
        for i, j in pairs
    ) / len(pairs)
    assert float(contrastive_loss(x, torch.tensor(labels), 1.0)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5]], ids=["no-positive", "no-negative"])
@pytest.mark.parametrize("name", ["triplet", "batch_hard"])
def test_batch_without_triplets_is_a_connected_zero(name: str, labels: list[int]) -> None:
    loss, margin = LOSSES[name]
    raw = torch.randn(4, 6, requires_grad=True)
    value = loss(unit(raw), torch.tensor(labels), margin)
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()  # type: ignore[no-untyped-call]
    assert raw.grad is not None
    assert torch.count_nonzero(raw.grad) == 0


def test_contrastive_on_a_single_row_is_a_connected_zero() -> None:
    raw = torch.randn(1, 6, requires_grad=True)
    value = contrastive_loss(unit(raw), torch.tensor([0]), 1.0)
    assert value.item() == 0.0
    value.backward()  # type: ignore[no-untyped-call]


@ALL
def test_gradients_flow_to_the_inputs(name: str) -> None:
    loss, margin = LOSSES[name]
    raw = torch.randn(12, 8, generator=torch.Generator().manual_seed(4)).requires_grad_()
    loss(unit(raw), torch.tensor([0, 1, 2] * 4), margin).backward()  # type: ignore[no-untyped-call]
    assert raw.grad is not None
    assert torch.isfinite(raw.grad).all()
    assert float(raw.grad.abs().sum()) > 0


@ALL
def test_gradients_stay_finite_for_duplicate_rows(name: str) -> None:
    loss, margin = LOSSES[name]
    raw = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], requires_grad=True)
    loss(unit(raw), torch.tensor([0, 0, 1, 1]), margin).backward()  # type: ignore[no-untyped-call]
    assert raw.grad is not None
    assert torch.isfinite(raw.grad).all()


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="expected embeddings"):
        triplet_loss(torch.zeros(3, 2), torch.tensor([0, 1]))


@ALL
def test_a_few_dozen_steps_on_a_linear_embedding_reduce_the_loss(name: str) -> None:
    """Two Gaussian classes in 6-d that overlap once embedded at random: a linear map learns them.

    (They are separable in the input, so even the batch-all mean, taken over the triplets still
    active, falls as the triplets get satisfied.)
    """
    loss, margin = LOSSES[name]
    torch.manual_seed(0)
    labels = torch.tensor([0, 1] * 32)
    points = torch.randn(64, 6) + 2.5 * labels.unsqueeze(1).float()
    model = torch.nn.Linear(6, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def current() -> float:
        with torch.no_grad():
            return float(loss(unit(model(points)), labels, margin))

    before = current()
    for _ in range(40):
        optimizer.zero_grad()
        loss(unit(model(points)), labels, margin).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert current() < 0.5 * before
