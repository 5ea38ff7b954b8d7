"""Packing prompts into model calls under a token budget.

Prompts are sorted by length so each call pads little, then packed greedily: a call holds at
most `max_requests` prompts and `max_tokens` padded tokens (windows x longest window). A prompt
that alone is over the budget gets a call of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.base.contract import Encoded


def padded_cost(n_windows: int, longest: int) -> int:
    """Tokens a call really computes once its windows are padded to the longest."""
    return n_windows * longest


def plan_model_batches(items: Sequence[Encoded], max_tokens: int, max_requests: int) -> list[list[int]]:
    """Indices of `items`, grouped into model calls, shortest prompts first."""
    order = sorted(range(len(items)), key=lambda i: _longest(items[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    windows = 0
    for index in order:
        item = items[index]
        n_windows, longest = len(item.windows), _longest(item)
        fits = padded_cost(windows + n_windows, longest) <= max_tokens and len(current) < max_requests
        if current and not fits:
            batches.append(current)
            current, windows = [], 0
        current.append(index)
        windows += n_windows
    if current:
        batches.append(current)
    return batches


def _longest(item: Encoded) -> int:
    return max((len(w) for w in item.windows), default=0)
