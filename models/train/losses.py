"""Metric-learning losses over a batch of unit-length sentence embeddings and integer class labels.

They train the encoder so prompts of one class (benign, unsafe, injection, ...) lie close together
and prompts of different classes lie apart, the Siamese/triplet set-up of Sentence-BERT.

Distance: the Euclidean distance between the unit vectors, d(a, b) = |a - b| = sqrt(2 - 2 cos(a, b)),
in [0, 2]; margins are in the same unit (a margin of 0.5 asks for a cosine gap of roughly
0.1 to 0.4, depending on where on the sphere the pair lies).

Every loss is formed inside the batch. Anchors without a positive (no other row of their class)
or without a negative (no row of another class) form no triplet and are skipped. When a batch
has nothing left to learn from (no valid triplet, or none still active), the loss is an exact
zero that is still connected to the embeddings (it has a `grad_fn`, its gradient is zero), so a
trainer can call `backward()` on every batch without special cases.
"""

from __future__ import annotations

import torch

#: Squared distances are clamped to this before the square root: its gradient stays finite for
#: identical rows (the diagonal, or a prompt sampled twice).
_MIN_SQUARED_DISTANCE = 1e-12


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """[n, n] Euclidean distances between the rows of `embeddings` (assumed unit length)."""
    # Differences rather than 2 - 2 cos: exact for near-identical rows, and n^2 d is small here.
    differences = embeddings.unsqueeze(1) - embeddings.unsqueeze(0)
    squared = differences.pow(2).sum(dim=2).clamp(min=_MIN_SQUARED_DISTANCE)
    return squared.sqrt()


def _same_class(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive mask: same class and a different row, negative mask: different class), [n, n]."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & not_self, ~same


def _zero_like_graph(embeddings: torch.Tensor) -> torch.Tensor:
    """A zero loss that keeps the graph: `backward()` works and gives zero gradients."""
    return embeddings.sum() * 0.0


def _check(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.dim() != 2 or labels.dim() != 1 or len(labels) != len(embeddings):
        raise ValueError(
            f"expected embeddings [n, d] and labels [n], got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)}"
        )


def valid_triplets(labels: torch.Tensor) -> torch.Tensor:
    """[n, n, n] mask of triplets (anchor a, positive p, negative n): a != p same class, n another."""
    positive, negative = _same_class(labels)
    return positive.unsqueeze(2) & negative.unsqueeze(1)


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Batch-all triplet loss: mean of max(0, d(a, p) - d(a, n) + margin) over the active triplets.

    Every valid triplet of the batch is formed; the mean is taken over those whose hinge is still
    positive, so the many triplets already satisfied do not dilute the signal of the rest.
    """
    _check(embeddings, labels)
    distances = pairwise_distances(embeddings)
    hinge = (distances.unsqueeze(2) - distances.unsqueeze(1) + margin).clamp(min=0.0)
    hinge = hinge * valid_triplets(labels)
    active = hinge > 0
    if not bool(active.any()):
        return _zero_like_graph(embeddings)
    return hinge.sum() / active.sum()


def batch_hard_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.5
) -> torch.Tensor:
    """Batch-hard triplet loss: per anchor, its farthest positive against its nearest negative.

    The mean of max(0, max_p d(a, p) - min_n d(a, n) + margin) over the anchors that have at
    least one positive and one negative in the batch.
    """
    _check(embeddings, labels)
    distances = pairwise_distances(embeddings)
    positive, negative = _same_class(labels)
    usable = positive.any(dim=1) & negative.any(dim=1)
    if not bool(usable.any()):
        return _zero_like_graph(embeddings)
    # Masked-out entries become 0 for the max over positives (distances are >= 0) and a value
    # above every distance (the diameter of the unit sphere is 2) for the min over negatives.
    hardest_positive = (distances * positive).max(dim=1).values
    hardest_negative = torch.where(negative, distances, torch.full_like(distances, 4.0)).min(dim=1).values
    hinge = (hardest_positive - hardest_negative + margin).clamp(min=0.0)
    return hinge[usable].mean()


def contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise contrastive loss over every pair of distinct rows of the batch.

    A pair of one class costs d^2 / 2 (pulled together); a pair of different classes costs
    max(0, margin - d)^2 / 2 (pushed at least `margin` apart). The mean is over all pairs; a batch
    of fewer than two rows gives the connected zero.
    """
    _check(embeddings, labels)
    if len(labels) < 2:
        return _zero_like_graph(embeddings)
    distances = pairwise_distances(embeddings)
    positive, negative = _same_class(labels)
    pulled = distances.pow(2) * positive
    pushed = (margin - distances).clamp(min=0.0).pow(2) * negative
    pairs = len(labels) * (len(labels) - 1)
    return 0.5 * (pulled + pushed).sum() / pairs
