"""Small stand-ins for unit tests of the pipeline (the real model is tested in tests/models)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.base.contract import Encoded, FloatArray, ModelInfo, Policy
from worker.schema import DeadLetter, RawRecord, Verdict

INFO = ModelInfo(
    name="fake",
    version="0.0.1",
    policies=(Policy("unsafe_content", "1", 0.5), Policy("prompt_injection", "2", 0.5)),
    max_length=8,
)


class KeywordModel:
    """Scores 0.9 for `unsafe_content` when the text has "bomb", for `prompt_injection` on "ignore".

    With `fail_on`, a text holding that string makes the model raise ("": every text does).
    """

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[int] = []
        self.asked: list[tuple[int, ...] | None] = []  # each scored item's columns
        self.fail_on = fail_on
        self._texts: dict[int, str] = {}

    @property
    def info(self) -> ModelInfo:
        return INFO

    @property
    def device(self) -> str:
        return "cpu"

    def normalize(self, text: str) -> str:
        return " ".join(text.split())

    def encode(self, texts: list[str]) -> list[Encoded]:
        out = []
        for text in texts:
            ids = np.array([hash(text) & 0xFFFF, *range(len(text.split()))], dtype=np.int64)
            self._texts[int(ids[0])] = text
            out.append(
                Encoded(tuple(ids[i : i + INFO.max_length] for i in range(0, len(ids), INFO.max_length)))
            )
        return out

    def score(self, batch: list[Encoded]) -> FloatArray:
        self.calls.append(len(batch))
        self.asked += [item.columns for item in batch]
        rows = []
        for item in batch:
            text = self._texts[int(item.windows[0][0])]
            if self.fail_on is not None and self.fail_on in text:
                raise RuntimeError("boom")
            rows.append([0.9 if "bomb" in text else 0.1, 0.9 if "ignore" in text.lower() else 0.1])
        return np.array(rows, dtype=np.float32)


class ListSink:
    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.letters: list[DeadLetter] = []

    async def deliver(self, verdicts: Sequence[Verdict], letters: Sequence[DeadLetter]) -> None:
        self.verdicts.extend(verdicts)
        self.letters.extend(letters)


def record(value: bytes | None, offset: int = 0, key: bytes | None = None) -> RawRecord:
    return RawRecord("prompts", 0, offset, key, value, (("trace", b"t-1"),), 1_700_000_000_000)
