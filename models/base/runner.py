"""Runs token-id windows through an ONNX session in padded, length-sorted chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import onnxruntime as ort

from models.base.contract import Encoded, FloatArray, IdArray
from models.base.windows import pad_windows


class WindowRunner:
    """Computes one output row per window, in session calls over length-sorted chunks.

    A chunk stays within `max_tokens_per_run` padded tokens, and its padded size stays within
    `max_padding_ratio` times its real token count, so mixing short and long windows in one batch
    does not make the short ones pay for the long ones' length.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        output: str,
        max_tokens_per_run: int = 16384,
        max_padding_ratio: float = 1.25,
    ) -> None:
        names = [o.name for o in session.get_outputs()]
        if output not in names:
            raise ValueError(f"model has no output {output!r} (it has {names})")
        self.session = session
        self.output = output
        self.max_tokens_per_run = max_tokens_per_run
        self.max_padding_ratio = max_padding_ratio
        self.pad_id = 0

    def _chunks(self, order: Sequence[int], lengths: Sequence[int]) -> Iterator[list[int]]:
        """Consecutive runs of `order` (sorted by length) within the token and padding budgets."""
        chunk: list[int] = []
        real_tokens = 0
        for index in order:
            padded = (len(chunk) + 1) * lengths[index]
            over_budget = padded > self.max_tokens_per_run
            if chunk and (over_budget or padded > self.max_padding_ratio * (real_tokens + lengths[index])):
                yield chunk
                chunk, real_tokens = [], 0
            chunk.append(index)
            real_tokens += lengths[index]
        if chunk:
            yield chunk

    def run_padded(self, ids: IdArray, mask: IdArray) -> FloatArray:
        """One session call on already padded inputs."""
        (out,) = self.session.run([self.output], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)

    def run_windows(self, windows: Sequence[IdArray]) -> FloatArray:
        """Output rows [len(windows), dim] in the order of `windows`."""
        if not windows:
            raise ValueError("no windows to run")
        lengths = [len(w) for w in windows]
        order = sorted(range(len(windows)), key=lengths.__getitem__)
        rows: list[FloatArray] = []
        positions: list[int] = []
        for chunk in self._chunks(order, lengths):
            ids, mask = pad_windows([windows[i] for i in chunk], self.pad_id)
            rows.append(self.run_padded(ids, mask))
            positions.extend(chunk)
        out = np.empty((len(windows), rows[0].shape[1]), dtype=np.float32)
        out[positions] = np.concatenate(rows)
        return out

    def run_max(self, batch: Sequence[Encoded]) -> FloatArray:
        """Per prompt, the element-wise maximum of its windows' output rows."""
        counts = [len(item.windows) for item in batch]
        if not batch or min(counts) == 0:
            raise ValueError("every prompt needs at least one window")
        rows = self.run_windows([w for item in batch for w in item.windows])
        offsets = np.cumsum([0, *counts[:-1]])
        return np.maximum.reduceat(rows, offsets, axis=0)
