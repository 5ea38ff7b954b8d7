"""Records that cross the worker's boundaries: the public message contract.

Input (topic `prompts`), a JSON object:
    id        string, required: echoed as the verdict's key and `id`
    text      string, required: the prompt
    policies  list of policy ids, optional: default every policy the model scores
    metadata  object, optional: echoed back unchanged

Output (topic `verdicts`, key = id): see `Verdict`.
Dead letters (topic `prompts.dlq`): see `DeadLetter`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Reason(enum.StrEnum):
    """Why a record became a dead letter."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    EMPTY_TEXT = "empty_text"
    TOO_LARGE = "too_large"
    UNKNOWN_POLICY = "unknown_policy"
    MODEL_ERROR = "model_error"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed Kafka record, as bytes, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A valid prompt, ready to score."""

    id: str
    text: str
    policies: tuple[str, ...] | None
    metadata: dict[str, Any] | None
    source: RawRecord


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be scored, and why."""

    reason: Reason
    detail: str
    source: RawRecord
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one prompt."""

    id: str
    verdict: str  # "allow" | "block"
    scores: dict[str, float]
    flagged: list[str]
    policy_versions: dict[str, str]
    model: dict[str, str]
    cached: bool
    latency_ms: float
    metadata: dict[str, Any] | None
    source: RawRecord = field(repr=False, compare=False)
