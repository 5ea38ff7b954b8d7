"""The data path of one batch, with no Kafka in it.

records -> decode (requests | dead letters) -> cache lookup (one round trip) -> model on the
misses -> cache write -> verdicts (`process`), then the sink, which waits for delivery
(`deliver`). The agent (`worker.agent`) acks the batch's input offsets only after `deliver`
returns, so a crash anywhere before re-reads the batch.

Misses longer than `long_prompt_tokens` are not scored with the batch: `process` hands them
back as `LongWork`, which `finish_long` scores in the model's long lane (its own calls, after
every waiting short call) once the rest of the batch is on its way, so a short prompt's verdict
never waits for a long neighbour's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from models.base.contract import Encoded, FloatArray, GuardModel, ModelInfo
from models.base.packing import split_by_length
from worker import codec, metrics
from worker.cache import ScoreCache, Scores, cache_key
from worker.config import Settings
from worker.inference import InferenceRunner
from worker.lanes import Lane
from worker.schema import DeadLetter, RawRecord, Reason, Request, Verdict

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where verdicts and dead letters go; `deliver` returns once the broker has them."""

    async def deliver(self, verdicts: Sequence[Verdict], letters: Sequence[DeadLetter]) -> None: ...


@dataclass(slots=True)
class BatchResult:
    verdicts: list[Verdict] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    #: the batch's long prompts, still to score (`Pipeline.finish_long`); None: none
    long: LongWork | None = None


@dataclass(slots=True)
class _Pending:
    request: Request
    key: str
    text: str
    #: the policies the request asks for (indices into the model's policies); None: all
    columns: tuple[int, ...] | None = None
    scores: Scores | None = None
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Served:
    """The model a batch is scored with and what its verdicts say: read once per batch."""

    model: GuardModel
    runner: InferenceRunner
    info: ModelInfo
    policy_ids: tuple[str, ...]
    thresholds: dict[str, float]
    versions: dict[str, str]
    model_ref: dict[str, str]

    @classmethod
    def of(cls, model: GuardModel, runner: InferenceRunner) -> Served:
        info = model.info
        return cls(
            model,
            runner,
            info,
            info.policy_ids,
            thresholds={p.id: p.threshold for p in info.policies},
            versions={p.id: p.version for p in info.policies},
            model_ref={"name": info.name, "version": info.version},
        )


@dataclass(frozen=True, slots=True)
class LongWork:
    """A batch's long prompts, encoded, grouped by cache key: scored after the batch is delivered."""

    served: Served
    groups: list[list[_Pending]]
    encoded: list[Encoded]
    started: float

    @property
    def sources(self) -> list[RawRecord]:
        """The records whose verdicts this work owes."""
        return [item.request.source for group in self.groups for item in group]


class Pipeline:
    """Turns a batch of raw records into delivered verdicts and dead letters.

    Each batch reads the served model once (`process`), so a model switched in (`switch`, a
    reloaded policy registry) applies from the next batch on and never within one.
    """

    def __init__(self, settings: Settings, model: GuardModel, cache: ScoreCache, sink: Sink) -> None:
        self._settings = settings
        self._cache = cache
        self._sink = sink
        self._served = Served.of(model, InferenceRunner(model, settings.batching))

    @property
    def model(self) -> GuardModel:
        """The model the next batch is scored with."""
        return self._served.model

    def switch(self, model: GuardModel) -> None:
        """Score the batches taken from now on with `model`; those in hand finish with theirs."""
        self._served = Served.of(model, self._served.runner.with_model(model))

    async def deliver(self, result: BatchResult, started: float) -> None:
        """Hand the batch's verdicts and dead letters to the sink; returns once they are delivered."""
        await self._sink.deliver(result.verdicts, result.letters)
        self._count_delivered(result)
        metrics.BATCH_LATENCY.observe(time.perf_counter() - started)

    async def process(self, records: Sequence[RawRecord], started: float | None = None) -> BatchResult:
        """Everything but delivery, and but scoring the long prompts (`result.long`, if any)."""
        started = time.perf_counter() if started is None else started
        metrics.RECORDS_IN.inc(len(records))
        metrics.BATCH_SIZE.observe(len(records))
        _observe_age(records)
        served = self._served
        result = BatchResult()
        requests = self._decode(served, records, result)
        pending, letters = await served.runner.off_loop(partial(self._prepare, served), requests)
        if letters:
            position = {id(record): index for index, record in enumerate(records)}
            result.letters = sorted([*result.letters, *letters], key=lambda d: position[id(d.source)])
        await self._lookup(served, pending)
        result.long = await self._score_misses(served, pending, result, started)
        await self._finish(served, pending, result, started)
        return result

    async def finish_long(self, work: LongWork) -> BatchResult:
        """Score a batch's long prompts in the long lane: their verdicts and dead letters."""
        result = BatchResult()
        scored = await work.served.runner.score(work.encoded, Lane.LONG, work.started)
        self._apply(work.served, work.groups, scored, result)
        await self._finish(work.served, [p for group in work.groups for p in group], result, work.started)
        return result

    async def process_all(self, records: Sequence[RawRecord]) -> BatchResult:
        """`process` and `finish_long` in one: every verdict and dead letter of the records."""
        result = await self.process(records)
        if result.long is not None:
            rest = await self.finish_long(result.long)
            result.verdicts += rest.verdicts
            result.letters += rest.letters
            result.long = None
        return result

    async def _finish(
        self, served: Served, pending: list[_Pending], result: BatchResult, started: float
    ) -> None:
        """Cache the new scores and build the verdicts of the scored items."""
        await self._cache.put_many(
            [(p.key, p.scores) for p in pending if p.scores is not None and not p.cached]
        )
        latency_ms = round((time.perf_counter() - started) * 1000, 3)  # the batch's verdicts are built now
        result.verdicts += [self._verdict(served, p, latency_ms) for p in pending if p.scores is not None]

    def _decode(self, served: Served, records: Sequence[RawRecord], result: BatchResult) -> list[Request]:
        """The valid requests of the batch; the other records become dead letters."""
        requests = []
        for record in records:
            decoded = codec.decode(record, served.policy_ids, self._settings.limits)
            if isinstance(decoded, DeadLetter):
                result.letters.append(decoded)
            else:
                requests.append(decoded)
        return requests

    def _prepare(
        self, served: Served, requests: Sequence[Request]
    ) -> tuple[list[_Pending], list[DeadLetter]]:
        """Normalized texts and cache keys. Runs off the event loop: normalizing 100k characters
        takes tens of milliseconds, and a batch of them would stall heartbeats and health checks."""
        pending, letters = [], []
        prefix = self._settings.redis.key_prefix
        for request in requests:
            text = served.model.normalize(request.text)
            if not text:
                detail = "`text` is empty once normalized"
                letters.append(DeadLetter(Reason.EMPTY_TEXT, detail, request.source, request.id))
                continue
            columns = _columns(served.policy_ids, request.policies)
            pending.append(_Pending(request, cache_key(prefix, served.info, text, columns), text, columns))
        return pending, letters

    async def _lookup(self, served: Served, pending: list[_Pending]) -> None:
        if not self._settings.redis.enabled or not pending:
            return
        found = await self._cache.get_many([p.key for p in pending])
        for item, scores in zip(pending, found, strict=True):
            if scores is not None and len(scores) == len(_scored_ids(served.policy_ids, item)):
                item.scores, item.cached = scores, True
        hits = sum(p.cached for p in pending)
        metrics.CACHE_HITS.inc(hits)
        metrics.CACHE_MISSES.inc(len(pending) - hits)

    async def _score_misses(
        self, served: Served, pending: list[_Pending], result: BatchResult, started: float
    ) -> LongWork | None:
        """Score the short misses now; the long ones come back as work for the long lane."""
        by_key: dict[str, list[_Pending]] = {}
        for item in pending:
            if item.scores is None:
                by_key.setdefault(item.key, []).append(item)
        if not by_key:
            return None
        groups = list(by_key.values())
        runner = served.runner
        encoded = await runner.encode([g[0].text for g in groups], [g[0].columns for g in groups])
        short, long = split_by_length(encoded, self._settings.batching.long_prompt_tokens)
        if short:
            short_groups = [groups[i] for i in short]
            scored = await runner.score([encoded[i] for i in short], Lane.SHORT, started)
            self._apply(served, short_groups, scored, result)
        if not long:
            return None
        return LongWork(served, [groups[i] for i in long], [encoded[i] for i in long], started)

    def _apply(
        self,
        served: Served,
        groups: Sequence[list[_Pending]],
        scored: Sequence[FloatArray | Exception],
        result: BatchResult,
    ) -> None:
        """Each group's scores (or a dead letter per item when the model could not score it)."""
        for group, outcome in zip(groups, scored, strict=True):
            for item in group:
                if isinstance(outcome, Exception):
                    detail = f"the model could not score this prompt: {outcome!r}"
                    result.letters.append(
                        DeadLetter(Reason.MODEL_ERROR, detail, item.request.source, item.request.id)
                    )
                else:
                    columns = item.columns if item.columns is not None else range(len(served.policy_ids))
                    item.scores = [float(outcome[c]) for c in columns]

    def _verdict(self, served: Served, item: _Pending, latency_ms: float) -> Verdict:
        assert item.scores is not None  # noqa: S101 - filtered by the caller
        request = item.request
        if request.policies is None:  # every policy, in the model's order: the scores as they are
            wanted: Sequence[str] = served.policy_ids
            scores: Sequence[float] = item.scores
            versions = served.versions
        else:
            by_id = dict(zip(_scored_ids(served.policy_ids, item), item.scores, strict=True))
            wanted = request.policies
            scores = [by_id[pid] for pid in wanted]
            versions = {pid: served.versions[pid] for pid in wanted}
        thresholds = served.thresholds
        flagged = [pid for pid, score in zip(wanted, scores, strict=True) if score >= thresholds[pid]]
        return Verdict(
            id=request.id,
            verdict="block" if flagged else "allow",
            scores={pid: round(score, 6) for pid, score in zip(wanted, scores, strict=True)},
            flagged=flagged,
            policy_versions=versions,
            model=served.model_ref,
            cached=item.cached,
            latency_ms=latency_ms,
            metadata=request.metadata,
            source=request.source,
        )

    def _count_delivered(self, result: BatchResult) -> None:
        now_ms = time.time() * 1000
        blocked = 0
        observe = metrics.END_TO_END_LATENCY.observe
        for verdict in result.verdicts:
            blocked += verdict.verdict == "block"
            if verdict.source.timestamp_ms:
                observe(max(0.0, now_ms - verdict.source.timestamp_ms) / 1000)
        metrics.count_verdicts(len(result.verdicts) - blocked, blocked)
        if result.letters:
            for reason, n in Counter(letter.reason.value for letter in result.letters).items():
                metrics.DEAD_LETTERS.labels(reason=reason).inc(n)

    def close(self) -> None:
        self._served.runner.close()


def _observe_age(records: Sequence[RawRecord]) -> None:
    """How long the batch's oldest record waited before the batch was taken."""
    stamps = [record.timestamp_ms for record in records if record.timestamp_ms]
    if stamps:
        metrics.BATCH_AGE.observe(max(0.0, time.time() - min(stamps) / 1000))


def _columns(policy_ids: Sequence[str], policies: Sequence[str] | None) -> tuple[int, ...] | None:
    """The model's columns a request asks for, in model order; None when it asks for all."""
    if policies is None or set(policies) >= set(policy_ids):
        return None
    wanted = set(policies)
    return tuple(index for index, pid in enumerate(policy_ids) if pid in wanted)


def _scored_ids(policy_ids: Sequence[str], item: _Pending) -> Sequence[str]:
    """The policy ids of `item.scores`, in order."""
    if item.columns is None:
        return policy_ids
    return [policy_ids[c] for c in item.columns]
