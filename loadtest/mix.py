"""What a load test sends: unique prompts, Zipf-distributed repeats, long prompts, bad records.

Every record's key and `id` are the same load-test id, so verdicts (keyed by `id`) and dead
letters (which keep the original key) can both be matched to the record that caused them,
even when the value is not JSON.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import random
from dataclasses import dataclass

import orjson

from loadtest.bench_worker import ASKS, SUBJECTS


class Kind(enum.StrEnum):
    UNIQUE = "unique"
    REPEAT = "repeat"
    LONG = "long"
    BAD_JSON = "bad_json"
    BAD_UTF8 = "bad_utf8"
    NO_TEXT = "no_text"
    OVERSIZED = "oversized"


#: The dead-letter reason each bad kind must get; the good kinds must get a verdict.
EXPECTED_REASON: dict[Kind, str] = {
    Kind.BAD_JSON: "invalid_json",
    Kind.BAD_UTF8: "invalid_utf8",
    Kind.NO_TEXT: "schema",
    Kind.OVERSIZED: "too_large",
}
BAD_KINDS = tuple(EXPECTED_REASON)

#: Words in a long prompt: about five model windows of 256 tokens.
LONG_PROMPT_WORDS = 1000


@dataclass(frozen=True, slots=True)
class MixConfig:
    """Shares of each kind (the rest are unique prompts) and the repeat pool's shape."""

    repeat_share: float = 0.3
    long_share: float = 0.02
    bad_share: float = 0.02
    pool_size: int = 1000
    zipf_s: float = 1.1
    oversized_chars: int = 110_000  # over the worker's default max_text_chars (100,000)

    def __post_init__(self) -> None:
        shares = (self.repeat_share, self.long_share, self.bad_share)
        if any(s < 0 for s in shares) or sum(shares) > 1:
            raise ValueError("the shares must be >= 0 and add up to at most 1")
        if self.pool_size < 1 or self.zipf_s <= 0:
            raise ValueError("pool_size must be >= 1 and zipf_s > 0")


class Zipf:
    """Draws ranks 0..n-1 with probability proportional to 1 / (rank + 1) ** s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = [1.0 / (rank + 1) ** s for rank in range(n)]
        total = sum(weights)
        self.probabilities = [w / total for w in weights]
        self._cumulative = list(itertools.accumulate(self.probabilities))
        self._rng = rng

    def draw(self) -> int:
        rank = bisect.bisect_left(self._cumulative, self._rng.random())
        return min(rank, len(self._cumulative) - 1)


@dataclass(frozen=True, slots=True)
class LoadRecord:
    id: str
    kind: Kind
    value: bytes
    first_use: bool = True  # False for a repeat whose text was sent before (a possible cache hit)

    @property
    def expected_reason(self) -> str | None:
        """The dead-letter reason this record must get, None when it must get a verdict."""
        return EXPECTED_REASON.get(self.kind)


class RecordFactory:
    """Makes record i of a run, drawing its kind and (for repeats) its pool entry."""

    def __init__(self, run_id: str, config: MixConfig, seed: int = 0) -> None:
        self._run_id = run_id
        self._config = config
        self._rng = random.Random(seed)
        self._zipf = Zipf(config.pool_size, config.zipf_s, self._rng)
        self._pool = [self._text(f"pool{rank}") for rank in range(config.pool_size)]
        self._used: set[int] = set()

    def make(self, index: int) -> LoadRecord:
        record_id = f"{self._run_id}-{index}"
        kind = self._draw_kind()
        if kind is Kind.REPEAT:
            rank = self._zipf.draw()
            first = rank not in self._used
            self._used.add(rank)
            return LoadRecord(record_id, kind, _value(record_id, self._pool[rank]), first)
        if kind is Kind.UNIQUE:
            return LoadRecord(record_id, kind, _value(record_id, self._text(str(index))))
        if kind is Kind.LONG:
            return LoadRecord(record_id, kind, _value(record_id, self._long_text(index)))
        return LoadRecord(record_id, kind, self._bad_value(kind, record_id))

    def _draw_kind(self) -> Kind:
        config, roll = self._config, self._rng.random()
        if roll < config.repeat_share:
            return Kind.REPEAT
        roll -= config.repeat_share
        if roll < config.long_share:
            return Kind.LONG
        roll -= config.long_share
        if roll < config.bad_share:
            return self._rng.choice(BAD_KINDS)
        return Kind.UNIQUE

    def _text(self, tag: str) -> str:
        """A prompt of realistic length, unique to this run and tag."""
        rng = self._rng
        ask = rng.choice(ASKS).format(s=rng.choice(SUBJECTS), n=f"{self._run_id}-{tag}")
        return ask + " " + " ".join(rng.choice(SUBJECTS) for _ in range(rng.randint(0, 8)))

    def _long_text(self, index: int) -> str:
        words = " ".join(self._rng.choice(SUBJECTS) for _ in range(LONG_PROMPT_WORDS // 2))
        return f"{self._text(str(index))} {words}"

    def _bad_value(self, kind: Kind, record_id: str) -> bytes:
        if kind is Kind.BAD_JSON:
            return b'{"id": "' + record_id.encode() + b'", "text": '
        if kind is Kind.BAD_UTF8:
            return b'{"id": "' + record_id.encode() + b'", "text": "caf\xe9 \xff"}'
        if kind is Kind.NO_TEXT:
            return orjson.dumps({"id": record_id})
        return _value(record_id, "a" * self._config.oversized_chars)


def _value(record_id: str, text: str) -> bytes:
    return orjson.dumps({"id": record_id, "text": text})
