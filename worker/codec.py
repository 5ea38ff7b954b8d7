"""Bytes to requests, and verdicts / dead letters to bytes.

`decode` never raises: every record comes out as a `Request` or a `DeadLetter` with a reason
code and a detail a person can act on.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Collection
from typing import Any

import orjson

from worker.config import LimitSettings
from worker.schema import DeadLetter, RawRecord, Reason, Request, Verdict

_TEXT_PREVIEW = 80


def decode(raw: RawRecord, known_policies: Collection[str], limits: LimitSettings) -> Request | DeadLetter:
    """Validate one record against the input contract."""
    value = raw.value
    if value is None:
        return DeadLetter(Reason.SCHEMA, "record has no value (null / tombstone)", raw)
    if len(value) > limits.max_message_bytes:
        detail = f"value is {len(value)} bytes; the limit is {limits.max_message_bytes}"
        return DeadLetter(Reason.TOO_LARGE, detail, raw)
    try:
        body = orjson.loads(value)  # orjson checks the UTF-8 too: one pass over the bytes
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            return DeadLetter(Reason.INVALID_UTF8, f"value is not UTF-8: {utf8_error}", raw)
        return DeadLetter(Reason.INVALID_JSON, f"value is not JSON: {exc}", raw)
    if not isinstance(body, dict):
        return DeadLetter(Reason.SCHEMA, f"value must be a JSON object, got {type(body).__name__}", raw)
    return _validate(body, raw, known_policies, limits)


def _validate(
    body: dict[str, Any], raw: RawRecord, known_policies: Collection[str], limits: LimitSettings
) -> Request | DeadLetter:
    request_id = body.get("id")
    if not isinstance(request_id, str) or not request_id:
        return DeadLetter(Reason.SCHEMA, "`id` must be a non-empty string", raw)
    if len(request_id) > limits.max_id_chars:
        return DeadLetter(Reason.SCHEMA, f"`id` is longer than {limits.max_id_chars} characters", raw)
    problem = _check_text(body.get("text"), limits)
    if problem is not None:
        return DeadLetter(problem[0], problem[1], raw, request_id)
    policies = body.get("policies")
    policy_problem = _check_policies(policies, known_policies, limits)
    if policy_problem is not None:
        return DeadLetter(policy_problem[0], policy_problem[1], raw, request_id)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return DeadLetter(Reason.SCHEMA, "`metadata` must be an object", raw, request_id)
    chosen = None if policies is None else tuple(dict.fromkeys(policies))
    return Request(request_id, body["text"], chosen, metadata, raw)


def _check_text(text: Any, limits: LimitSettings) -> tuple[Reason, str] | None:
    if not isinstance(text, str):
        return Reason.SCHEMA, "`text` must be a string"
    if len(text) > limits.max_text_chars:
        return (
            Reason.TOO_LARGE,
            f"`text` has {len(text)} characters; the limit is {limits.max_text_chars}",
        )
    if not text.strip():
        return Reason.EMPTY_TEXT, "`text` is empty or only white space"
    return None


def _check_policies(
    policies: Any, known_policies: Collection[str], limits: LimitSettings
) -> tuple[Reason, str] | None:
    if policies is None:
        return None
    if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
        return Reason.SCHEMA, "`policies` must be a list of policy id strings"
    if not policies:
        return Reason.SCHEMA, "`policies` is empty; omit it to use every policy"
    if len(policies) > limits.max_policies:
        return (
            Reason.SCHEMA,
            f"`policies` names {len(policies)} ids; the limit is {limits.max_policies}",
        )
    unknown = sorted(set(policies) - set(known_policies))
    if unknown:
        shown = ", ".join(p[:_TEXT_PREVIEW] for p in unknown[:5])
        return (
            Reason.UNKNOWN_POLICY,
            f"unknown policy id(s): {shown}; known: {', '.join(known_policies)}",
        )
    return None


def encode_verdict(verdict: Verdict) -> tuple[bytes, bytes]:
    """Key and value of the record on the verdicts topic."""
    body = {
        "id": verdict.id,
        "verdict": verdict.verdict,
        "scores": verdict.scores,
        "flagged": verdict.flagged,
        "policy_versions": verdict.policy_versions,
        "model": verdict.model,
        "cached": verdict.cached,
        "latency_ms": verdict.latency_ms,
        "metadata": verdict.metadata,
    }
    return verdict.id.encode(), orjson.dumps(body)


def encode_dead_letter(
    letter: DeadLetter, worker_id: str
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of the record on the dead-letter topic.

    The original key, value and headers travel base64-encoded so that any bytes survive.
    """
    src = letter.source
    body = {
        "reason": letter.reason.value,
        "detail": letter.detail,
        "request_id": letter.request_id,
        "source": {
            "topic": src.topic,
            "partition": src.partition,
            "offset": src.offset,
            "timestamp_ms": src.timestamp_ms,
        },
        "original": {
            "key_b64": _b64(src.key),
            "value_b64": _b64(src.value),
            "headers": [[name, _b64(value)] for name, value in src.headers],
        },
        "worker": worker_id,
        "failed_at_ms": int(time.time() * 1000),
    }
    headers = [*src.headers, ("guardstream.reason", letter.reason.value.encode())]
    return src.key, orjson.dumps(body), headers


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
