"""Runs the guard model off the event loop.

Normalizing, tokenizing and scoring are CPU/GPU work: they run on their own threads so the event
loop keeps fetching, heartbeating and serving health checks meanwhile. A model call that fails
is split in halves and retried (a GPU out of memory is the usual cause) down to single prompts;
a prompt that still fails alone is reported back to the caller so it can become a dead letter.
Only when the model also fails on a known-good prompt is it broken: then `ModelFailure`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from models.base.contract import Columns, Encoded, FloatArray, GuardModel
from models.base.packing import Piece, combine, plan_pieces
from worker import metrics
from worker.config import BatchingSettings
from worker.lanes import Lane, LaneThread

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")

#: A prompt every working model scores: when it fails too, the model is broken, not the input.
KNOWN_GOOD_PROMPT = "What is the capital of France?"


_MODEL_WAIT = {lane: metrics.MODEL_WAIT.labels(lane=lane.name.lower()) for lane in Lane}


class ModelFailure(Exception):
    """The model fails on a known-good prompt too: it is broken, not the batch's prompts."""


class InferenceRunner:
    """Normalizes and tokenizes on one thread, scores on another."""

    def __init__(
        self,
        model: GuardModel,
        batching: BatchingSettings,
        threads: tuple[ThreadPoolExecutor, LaneThread] | None = None,
    ) -> None:
        self.model = model
        self._batching = batching
        if threads is None:
            threads = (
                ThreadPoolExecutor(1, thread_name_prefix="guardstream-tokenize"),
                LaneThread("guardstream-model"),
            )
        self._tokenizer_thread, self._model_thread = threads
        self._known_good: list[Encoded] | None = None

    def with_model(self, model: GuardModel) -> InferenceRunner:
        """A runner of `model` on this runner's threads (one model call at a time across both)."""
        return InferenceRunner(model, self._batching, (self._tokenizer_thread, self._model_thread))

    async def off_loop(self, function: Callable[[A], T], argument: A) -> T:
        """`function(argument)` on the tokenizer thread (text work that would stall the loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, function, argument)

    async def encode(self, texts: Sequence[str], columns: Sequence[Columns] | None = None) -> list[Encoded]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, self.model.encode, texts, columns)

    async def score(
        self, items: Sequence[Encoded], lane: Lane = Lane.SHORT, order: float = 0.0
    ) -> list[FloatArray | Exception]:
        """One result per item: its scores, or the error that stopped it from being scored alone.

        The calls are packed by `models.base.packing` from the model's own costs, and all handed
        to the model thread at once, so it never waits for the event loop between them; calls of
        the long lane are cut to `long_prompt_tokens` each and wait for every short call. Within a
        lane, calls of a lower `order` (an earlier batch) go first. Raises `ModelFailure` when a
        prompt failed and the known-good prompt fails too.
        """
        pieces, calls = await self.off_loop(self._plan, (items, lane))
        scored = await asyncio.gather(
            *(self._score_with_split([pieces[i] for i in call], lane, order) for call in calls)
        )
        outcome: list[FloatArray | Exception | None] = [None] * len(pieces)
        for call, results in zip(calls, scored, strict=True):
            for index, result in zip(call, results, strict=True):
                outcome[index] = result
        failed = {p.owner: r for p, r in zip(pieces, outcome, strict=True) if isinstance(r, Exception)}
        if failed:
            await self._check_known_good()
        rows = [r if isinstance(r, np.ndarray) else np.zeros(0, dtype=np.float32) for r in outcome]
        ok = [(p, r) for p, r in zip(pieces, rows, strict=True) if p.owner not in failed]
        combined = combine(len(items), len(self.model.info.policies), [p for p, _ in ok], [r for _, r in ok])
        return [failed.get(index, combined[index]) for index in range(len(items))]

    def _plan(self, work: tuple[Sequence[Encoded], Lane]) -> tuple[list[Piece], list[list[int]]]:
        items, lane = work
        batching = self._batching
        budget = batching.max_batch_tokens if lane is Lane.SHORT else batching.long_prompt_tokens
        return plan_pieces(self.model, items, budget, batching.max_batch_requests)

    async def _check_known_good(self) -> None:
        """Raise `ModelFailure` unless the model scores the known-good prompt."""
        if self._known_good is None:
            text = await self.off_loop(self.model.normalize, KNOWN_GOOD_PROMPT)
            self._known_good = await self.encode([text])
        try:
            await self._call_model(self._known_good, Lane.SHORT, 0.0)
        except Exception as exc:  # any error: the model is broken, whatever the input
            raise ModelFailure(f"the model fails on a known-good prompt too: {exc!r}") from exc

    async def _score_with_split(
        self, batch: list[Piece], lane: Lane, order: float
    ) -> list[FloatArray | Exception]:
        try:
            scores = await self._call_model([piece.item for piece in batch], lane, order)
        except Exception as exc:  # the model's errors are not ours to know in advance
            if len(batch) == 1:
                log.exception("model failed on a single prompt")
                return [exc]
            log.warning("model call of %d prompts failed (%r); splitting and retrying", len(batch), exc)
            half = len(batch) // 2
            return [
                *await self._score_with_split(batch[:half], lane, order),
                *await self._score_with_split(batch[half:], lane, order),
            ]
        return list(scores)

    async def _call_model(self, batch: list[Encoded], lane: Lane, order: float) -> FloatArray:
        queued = time.perf_counter()
        scores, seconds = await self._model_thread.run(lane, order, self._timed_score, batch)
        _MODEL_WAIT[lane].observe(time.perf_counter() - queued - seconds)
        metrics.MODEL_LATENCY.observe(seconds)
        metrics.MODEL_BATCH_SIZE.observe(len(batch))
        expected = (len(batch), len(self.model.info.policies))
        if scores.shape != expected:
            raise ValueError(f"model returned scores of shape {scores.shape}, expected {expected}")
        return np.asarray(scores, dtype=np.float32)

    def _timed_score(self, batch: list[Encoded]) -> tuple[FloatArray, float]:
        """The model's scores and its own time, without the wait for the model thread."""
        started = time.perf_counter()
        scores = self.model.score(batch)
        return scores, time.perf_counter() - started

    def close(self) -> None:
        self._tokenizer_thread.shutdown(wait=True)
        self._model_thread.shutdown()
