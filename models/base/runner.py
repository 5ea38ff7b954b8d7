"""Runs token-id rows through an ONNX session: one padded call per batch the caller packed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from models.base.contract import Cost, Encoded, FloatArray, IdArray
from models.base.packing import DEFAULT_MAX_ITEMS, DEFAULT_MAX_TOKENS, plan_calls
from models.base.windows import pad_windows


class WindowRunner:
    """Computes one output row per input row (a window, or a GuardFormer policy + window pair).

    The serving path runs each batch in a single session call (`run_rows`, `run_max`): the batch
    was already packed within the token budget by `models.base.packing`. `run_windows` is for
    tools with many windows at once: it packs them with the same packer first.
    """

    def __init__(self, session: ort.InferenceSession, output: str) -> None:
        names = [o.name for o in session.get_outputs()]
        if output not in names:
            raise ValueError(f"model has no output {output!r} (it has {names})")
        self.session = session
        self.output = output
        self.pad_id = 0

    def run_padded(self, ids: IdArray, mask: IdArray) -> FloatArray:
        """One session call on already padded inputs."""
        (out,) = self.session.run([self.output], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)

    def run_rows(self, rows: Sequence[IdArray]) -> FloatArray:
        """Output rows [len(rows), dim] of one session call, every row padded to the longest."""
        if not rows:
            raise ValueError("no rows to run")
        return self.run_padded(*pad_windows(rows, self.pad_id))

    def run_max(self, batch: Sequence[Encoded]) -> FloatArray:
        """Per prompt, the element-wise maximum of its windows' output rows (one session call)."""
        counts = [len(item.windows) for item in batch]
        if not batch or min(counts) == 0:
            raise ValueError("every prompt needs at least one window")
        rows = self.run_rows([w for item in batch for w in item.windows])
        offsets = np.cumsum([0, *counts[:-1]])
        return np.maximum.reduceat(rows, offsets, axis=0)

    def run_windows(
        self,
        windows: Sequence[IdArray],
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_rows: int = DEFAULT_MAX_ITEMS,
    ) -> FloatArray:
        """Output rows [len(windows), dim] in the order of `windows`, in calls packed by length."""
        if not windows:
            raise ValueError("no windows to run")
        calls = plan_calls([Cost(1, len(w)) for w in windows], max_tokens, max_rows)
        out: FloatArray | None = None
        for call in calls:
            rows = self.run_rows([windows[i] for i in call])
            if out is None:
                out = np.empty((len(windows), rows.shape[1]), dtype=np.float32)
            out[call] = rows
        assert out is not None  # noqa: S101 (at least one call)
        return out
