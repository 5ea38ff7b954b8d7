"""The worker with a stand-in model whose scoring costs nothing: the pipeline's own ceiling.

    python -m loadtest.standin_worker      # settings from GUARDSTREAM_* variables, as `guardstream worker`

The stand-in wraps the real served model: normalization, tokenization, cache keys, packing and
verdicts are the worker's real ones; only the forward pass is replaced by constant scores. It is
benchmark code (`loadtest.bench_worker` runs it), never a model the worker can be configured with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from models.base.contract import Columns, Cost, Encoded, FloatArray, GuardModel, ModelInfo
from models.serving import ServedModelBuilder
from worker.app import run_worker, serving_options
from worker.config import load_settings

#: The score every policy gets from the stand-in: under any threshold, so every verdict allows.
STANDIN_SCORE = 0.01


class StandInModel:
    """The real model's text work and costs, and scores that cost nothing."""

    def __init__(self, model: GuardModel) -> None:
        self._model = model

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def device(self) -> str:
        return "stand-in"

    def normalize(self, text: str) -> str:
        return self._model.normalize(text)

    def encode(self, texts: Sequence[str], columns: Sequence[Columns] | None = None) -> list[Encoded]:
        return self._model.encode(texts, columns)

    def cost(self, item: Encoded) -> Cost:
        return self._model.cost(item)

    def split(self, item: Encoded, max_tokens: int) -> list[Encoded]:
        return self._model.split(item, max_tokens)

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        return np.full((len(batch), len(self.info.policies)), STANDIN_SCORE, dtype=np.float32)


class StandInBuilder(ServedModelBuilder):
    """Builds the served model as the worker does, then puts the stand-in in front of it."""

    def reload(self) -> GuardModel:
        return StandInModel(super().reload())


def main() -> None:
    settings = load_settings({})
    logging.basicConfig(level=settings.log_level)
    run_worker(settings, StandInBuilder(serving_options(settings)))


if __name__ == "__main__":
    main()
