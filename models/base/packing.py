"""The one packer: prompts grouped into model calls under a token budget, from the model's own costs.

Each prompt's cost (`Cost`: model rows x its longest row) comes from the model, so the budget
bounds the real work whatever the family: an embedder row is a window; a GuardFormer row is a
window paired with one asked policy. Prompts are sorted by their longest row so each call pads
little, then packed greedily: a call holds at most `max_items` prompts, at most `max_tokens`
padded tokens (all its rows x its longest row), and pads its rows to at most
`max_padding_ratio` times what they would cost alone (short prompts do not pay for a long one's
length). A prompt over the budget on its own is first cut into pieces by the model
(`GuardModel.split`), whose scores combine by their maximum. `split_by_length` tells long
prompts apart, for a caller that scores them in calls of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.base.contract import Cost, Encoded, FloatArray, GuardModel

#: Largest padded / unpadded token ratio of one call.
MAX_PADDING_RATIO = 1.25


def plan_calls(
    costs: Sequence[Cost], max_tokens: int, max_items: int, max_padding_ratio: float = MAX_PADDING_RATIO
) -> list[list[int]]:
    """Indices of `costs`, grouped into model calls, cheapest-row prompts first."""
    order = sorted(range(len(costs)), key=lambda i: costs[i].longest)
    calls: list[list[int]] = []
    current: list[int] = []
    rows = alone = 0
    for index in order:
        cost = costs[index]
        padded = (rows + cost.rows) * cost.longest  # sorted: this prompt's row is the longest
        fits = (
            padded <= max_tokens
            and padded <= max_padding_ratio * (alone + cost.padded)
            and len(current) < max_items
        )
        if current and not fits:
            calls.append(current)
            current, rows, alone = [], 0, 0
        current.append(index)
        rows += cost.rows
        alone += cost.padded
    if current:
        calls.append(current)
    return calls


def split_by_length(items: Sequence[Encoded], long_tokens: int) -> tuple[list[int], list[int]]:
    """Indices of the short prompts and of the long ones: those whose windows hold over
    `long_tokens` tokens, which a latency-bound caller scores in calls of their own. By the text's
    length, not its cost: a short prompt asked about many policies (a GuardFormer row each) is
    still short, and a text of one window never long when `long_tokens` is the window size."""
    short: list[int] = []
    long: list[int] = []
    for index, item in enumerate(items):
        (long if item.n_tokens > long_tokens else short).append(index)
    return short, long


@dataclass(frozen=True, slots=True)
class Piece:
    """One unit of packing: a prompt, or a piece of one too costly for a call on its own."""

    owner: int
    item: Encoded


def pieces_within(model: GuardModel, items: Sequence[Encoded], max_tokens: int) -> list[Piece]:
    """Every item as one piece, or as the model's pieces when it alone is over `max_tokens`."""
    pieces: list[Piece] = []
    for owner, item in enumerate(items):
        if model.cost(item).padded <= max_tokens:
            pieces.append(Piece(owner, item))
        else:
            pieces += [Piece(owner, part) for part in model.split(item, max_tokens)]
    return pieces


def plan_pieces(
    model: GuardModel, items: Sequence[Encoded], max_tokens: int, max_items: int
) -> tuple[list[Piece], list[list[int]]]:
    """The pieces of `items` and the model calls (indices into the pieces) that score them."""
    pieces = pieces_within(model, items, max_tokens)
    return pieces, plan_calls([model.cost(p.item) for p in pieces], max_tokens, max_items)


#: Defaults of tools that score outside the worker (evaluation, export checks, `guardstream score`):
#: the worker's own defaults (`max_batch_tokens`, `max_batch_requests`).
DEFAULT_MAX_TOKENS = 8192
DEFAULT_MAX_ITEMS = 64


def combine(n_items: int, n_policies: int, pieces: Sequence[Piece], rows: Sequence[FloatArray]) -> FloatArray:
    """Per item, the element-wise maximum of its pieces' score rows (NaN ignored)."""
    out = np.full((n_items, n_policies), np.nan, dtype=np.float32)
    for piece, row in zip(pieces, rows, strict=True):
        out[piece.owner] = np.fmax(out[piece.owner], row)
    return out


def score_items(
    model: GuardModel,
    items: Sequence[Encoded],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> FloatArray:
    """Scores [len(items), policies] of any number of encoded prompts, in calls packed as the
    worker packs them (for tools; the worker adds retries and runs the calls off its event loop)."""
    pieces, calls = plan_pieces(model, items, max_tokens, max_items)
    rows: list[FloatArray] = [np.empty(0, dtype=np.float32)] * len(pieces)
    for call in calls:
        for index, row in zip(call, model.score([pieces[i].item for i in call]), strict=True):
            rows[index] = row
    return combine(len(items), len(model.info.policies), pieces, rows)


def score_texts(model: GuardModel, texts: Sequence[str], **budget: int) -> FloatArray:
    """Scores of raw texts: normalized, encoded and scored as the worker does."""
    return score_items(model, model.encode([model.normalize(t) for t in texts]), **budget)
