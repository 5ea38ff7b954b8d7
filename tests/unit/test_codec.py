import base64

import orjson
import pytest

from tests.unit.fakes import record
from worker import codec
from worker.config import LimitSettings
from worker.schema import DeadLetter, Reason, Request

LIMITS = LimitSettings(max_message_bytes=4000, max_text_chars=500, max_policies=3)
KNOWN = ("unsafe_content", "prompt_injection")


def decode(value: bytes | None) -> Request | DeadLetter:
    return codec.decode(record(value), KNOWN, LIMITS)


def test_valid_request_keeps_fields() -> None:
    body = {
        "id": "a1",
        "text": "hello",
        "policies": ["prompt_injection"],
        "metadata": {"user": 7},
        "extra": 1,
    }
    request = decode(orjson.dumps(body))
    assert isinstance(request, Request)
    assert (request.id, request.text, request.policies, request.metadata) == (
        "a1",
        "hello",
        ("prompt_injection",),
        {"user": 7},
    )


def test_policies_default_to_none_and_duplicates_fold() -> None:
    assert decode(b'{"id": "a", "text": "t"}').policies is None  # type: ignore[union-attr]
    twice = decode(b'{"id": "a", "text": "t", "policies": ["unsafe_content", "unsafe_content"]}')
    assert twice.policies == ("unsafe_content",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe{}", Reason.INVALID_UTF8),
        (b'{"id": "a", "text": "caf\xe9"}', Reason.INVALID_UTF8),
        (b"{not json", Reason.INVALID_JSON),
        (b"[" * 1100 + b"]" * 1100, Reason.INVALID_JSON),
        (b"", Reason.INVALID_JSON),
        (None, Reason.SCHEMA),
        (b"[1, 2]", Reason.SCHEMA),
        (b'{"text": "no id"}', Reason.SCHEMA),
        (b'{"id": 5, "text": "numeric id"}', Reason.SCHEMA),
        (b'{"id": "a"}', Reason.SCHEMA),
        (b'{"id": "a", "text": 3}', Reason.SCHEMA),
        (b'{"id": "a", "text": "t", "policies": "unsafe_content"}', Reason.SCHEMA),
        (b'{"id": "a", "text": "t", "policies": []}', Reason.SCHEMA),
        (b'{"id": "a", "text": "t", "policies": ["a", "b", "c", "d"]}', Reason.SCHEMA),
        (b'{"id": "a", "text": "t", "metadata": [1]}', Reason.SCHEMA),
        (b'{"id": "a", "text": "   \\n\\t "}', Reason.EMPTY_TEXT),
        (b'{"id": "a", "text": ""}', Reason.EMPTY_TEXT),
        (b'{"id": "a", "text": "' + b"x" * 501 + b'"}', Reason.TOO_LARGE),
        (b'{"id": "a", "text": "t", "pad": "' + b"x" * 4000 + b'"}', Reason.TOO_LARGE),
        (b'{"id": "a", "text": "t", "policies": ["unsafe_content", "nope"]}', Reason.UNKNOWN_POLICY),
    ],
)
def test_every_reason_code(value: bytes | None, reason: Reason) -> None:
    letter = decode(value)
    assert isinstance(letter, DeadLetter)
    assert letter.reason is reason
    assert letter.detail


def test_dead_letter_keeps_request_id_when_known() -> None:
    letter = decode(b'{"id": "a7", "text": ""}')
    assert isinstance(letter, DeadLetter)
    assert letter.request_id == "a7"


def test_dead_letter_encoding_carries_original_bytes_and_source() -> None:
    raw = b"\x00\xffbinary"
    letter = codec.decode(record(raw, offset=42, key=b"k"), KNOWN, LIMITS)
    assert isinstance(letter, DeadLetter)
    key, value, headers = codec.encode_dead_letter(letter, "host:1")
    body = orjson.loads(value)
    assert key == b"k"
    assert base64.b64decode(body["original"]["value_b64"]) == raw
    assert body["original"]["headers"] == [["trace", base64.b64encode(b"t-1").decode()]]
    assert body["source"] == {
        "topic": "prompts",
        "partition": 0,
        "offset": 42,
        "timestamp_ms": 1_700_000_000_000,
    }
    assert body["reason"] == "invalid_utf8"
    assert ("guardstream.reason", b"invalid_utf8") in headers
