"""Generator output -> a generated prompt, a judgement or a policy; or a counted failure reason.

Nothing here raises on bad output: every parser returns either its record or a `ParseFailure`
whose `reason` is one of `FailureReason`, which the pipeline counts in the run summary.

A generated prompt is rejected when the output holds no JSON object, the object lacks a
`prompt` (or `rationale`) string, the prompt is empty, shorter or longer than the limits, reads
as a refusal ("I'm sorry, but I can't ..."), is a placeholder copied from the request, is a
copy of one of the policy's examples (verbatim, or with a character-shingle Jaccard similarity of
at least 0.8: a number or a word changed) or a verbatim copy of its name, description or
behaviour items (compared casefolded, with whitespace collapsed and surrounding quotes and
punctuation stripped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from models.policies import PolicyDefinition
from models.synth.dedup import jaccard, shingles
from models.synth.lenient_json import JsonNotFound, find_object
from models.synth.prompts import COMPLIES, VIOLATES

DEFAULT_MIN_CHARS = 8
DEFAULT_MAX_CHARS = 2000
#: Character-shingle Jaccard similarity from which a prompt counts as a copy of a policy example.
NEAR_COPY_THRESHOLD = 0.8

#: Accepted spellings of the fields (compared casefolded), first the one the request asks for.
PROMPT_KEYS = ("prompt", "user_prompt", "message", "user_message")
RATIONALE_KEYS = ("rationale", "reason", "explanation")
LABEL_KEYS = ("label", "verdict")
#: Words a judgement may use for each label (casefolded, '-' and '_' read as spaces).
LABEL_SYNONYMS = {
    VIOLATES: frozenset(
        {"violates", "violate", "violation", "violating", "non compliant", "noncompliant", "unsafe"}
    ),
    COMPLIES: frozenset({"complies", "comply", "compliant", "compliance", "safe", "allowed"}),
}
_LABEL_IN_TEXT = re.compile(r"\blabel\b\W{0,4}(violates|complies)\b", re.IGNORECASE)

#: Openings of refusals, searched in the first sentence of an output or a prompt.
_REFUSAL = re.compile(
    r"\b(?:i['\u2019]?m sorry|i am sorry|sorry,? but|i apologi[sz]e|as an ai\b|as a language model"
    r"|(?:i (?:can['\u2019]?t|cannot|can not|won['\u2019]?t|will not)"
    r"|i(?:['\u2019]?m| am) (?:unable|not able) to)"
    r" (?:help|assist|provide|create|generate|write|comply|fulfil|fulfill|produce"
    r"|do that|support|engage|answer))",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"^\s*(?:<[^<>]*>|\.{3}|\u2026|\[[^\[\]]*\])\s*$")
_EDGE_PUNCTUATION = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb.,;:!?()[]{}<> \t\n"


class FailureReason(StrEnum):
    """Why a generator output produced no record."""

    EMPTY_OUTPUT = "empty_output"
    NO_JSON = "no_json"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_PROMPT = "empty_prompt"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    REFUSAL = "refusal"
    PLACEHOLDER = "placeholder"
    COPIED_EXAMPLE = "copied_example"
    COPIED_POLICY = "copied_policy"
    BAD_LABEL = "bad_label"
    INVALID_POLICY = "invalid_policy"
    DUPLICATE_POLICY_ID = "duplicate_policy_id"
    GENERATOR_ERROR = "generator_error"


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """An output that gave no record: the reason (counted) and a detail (for the work file)."""

    reason: FailureReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GeneratedPrompt:
    """A generated user prompt and the generator's rationale for its label."""

    text: str
    rationale: str
    repaired: bool = False


@dataclass(frozen=True, slots=True)
class Judgement:
    """The label a reflection gave a prompt (1 violates, 0 complies) and why."""

    label: int
    rationale: str
    repaired: bool = False


@dataclass(frozen=True, slots=True)
class TextLimits:
    """Bounds on the length of a generated prompt, in characters."""

    min_chars: int = DEFAULT_MIN_CHARS
    max_chars: int = DEFAULT_MAX_CHARS


def canonical(text: str) -> str:
    """`text` casefolded, whitespace collapsed, surrounding quotes and punctuation stripped."""
    return " ".join(text.casefold().split()).strip(_EDGE_PUNCTUATION)


def is_refusal(text: str) -> bool:
    """Whether the first sentence of `text` (its first 200 characters at most) reads as a refusal."""
    head = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0][:200]
    return _REFUSAL.search(head) is not None


def read_object(output: str) -> tuple[dict[str, Any], bool] | ParseFailure:
    """The JSON object in `output` and whether it was repaired, or why there is none."""
    if not output.strip():
        return ParseFailure(FailureReason.EMPTY_OUTPUT)
    try:
        found = find_object(output)
    except JsonNotFound as exc:
        if is_refusal(output):
            return ParseFailure(FailureReason.REFUSAL, _excerpt(output))
        reason = FailureReason.INVALID_JSON if exc.had_brace else FailureReason.NO_JSON
        return ParseFailure(reason, _excerpt(output))
    if not isinstance(found.value, dict):
        return ParseFailure(FailureReason.NOT_OBJECT, f"got {type(found.value).__name__}")
    return found.value, found.repaired


def field(obj: dict[str, Any], names: tuple[str, ...]) -> tuple[bool, Any]:
    """(present, value) of the first of `names` in `obj`, keys compared casefolded and stripped."""
    keys = {str(key).strip().casefold(): value for key, value in obj.items()}
    for name in names:
        if name in keys:
            return True, keys[name]
    return False, None


def _string_field(obj: dict[str, Any], names: tuple[str, ...]) -> str | ParseFailure:
    present, value = field(obj, names)
    if not present:
        return ParseFailure(FailureReason.MISSING_FIELD, names[0])
    if not isinstance(value, str):
        return ParseFailure(FailureReason.WRONG_TYPE, f"{names[0]} is {type(value).__name__}")
    return value


def policy_texts(policy: PolicyDefinition) -> tuple[frozenset[str], frozenset[str]]:
    """The canonical forms of the policy's examples, and of its name, description and items."""
    examples = frozenset(canonical(text) for text in (*policy.safe_examples, *policy.unsafe_examples))
    own = frozenset(
        canonical(text) for text in (policy.name, policy.description, *policy.allowed, *policy.disallowed)
    )
    return examples, own


def _near_copy(text: str, policy: PolicyDefinition) -> bool:
    """Whether `text` is a near copy of one of the policy's examples (shingle Jaccard >= threshold)."""
    own = shingles(text)
    examples = (*policy.safe_examples, *policy.unsafe_examples)
    return any(jaccard(own, shingles(example)) >= NEAR_COPY_THRESHOLD for example in examples)


def check_prompt_text(text: str, policy: PolicyDefinition, limits: TextLimits) -> ParseFailure | None:
    """Why `text` is not a usable prompt for `policy`, or None when it is."""
    stripped = text.strip()
    if not stripped:
        return ParseFailure(FailureReason.EMPTY_PROMPT)
    if _PLACEHOLDER.match(stripped):
        return ParseFailure(FailureReason.PLACEHOLDER, stripped)
    if len(stripped) < limits.min_chars:
        return ParseFailure(FailureReason.TOO_SHORT, f"{len(stripped)} characters")
    if len(stripped) > limits.max_chars:
        return ParseFailure(FailureReason.TOO_LONG, f"{len(stripped)} characters")
    if is_refusal(stripped):
        return ParseFailure(FailureReason.REFUSAL, _excerpt(stripped))
    examples, own = policy_texts(policy)
    key = canonical(stripped)
    if key in examples or _near_copy(stripped, policy):
        return ParseFailure(FailureReason.COPIED_EXAMPLE, _excerpt(stripped))
    if key in own:
        return ParseFailure(FailureReason.COPIED_POLICY, _excerpt(stripped))
    return None


def parse_generated(
    output: str, policy: PolicyDefinition, limits: TextLimits | None = None
) -> GeneratedPrompt | ParseFailure:
    """The prompt and rationale of a generation output, or why it gives none."""
    read = read_object(output)
    if isinstance(read, ParseFailure):
        return read
    obj, repaired = read
    text = _string_field(obj, PROMPT_KEYS)
    if isinstance(text, ParseFailure):
        return text
    rationale = _string_field(obj, RATIONALE_KEYS)
    if isinstance(rationale, ParseFailure):
        return rationale
    problem = check_prompt_text(text, policy, limits or TextLimits())
    if problem is not None:
        return problem
    return GeneratedPrompt(text.strip(), rationale.strip(), repaired)


def label_from_word(value: Any) -> int | None:
    """1 or 0 for a label word ("violates", "non-compliant", "safe", ...) or 1/0 itself, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value in (VIOLATES, COMPLIES):
        return value
    if not isinstance(value, str):
        return None
    word = " ".join(value.casefold().replace("-", " ").replace("_", " ").split()).strip(_EDGE_PUNCTUATION)
    return next((label for label, words in LABEL_SYNONYMS.items() if word in words), None)


def parse_judgement(output: str) -> Judgement | ParseFailure:
    """The label and rationale of a reflection output, or why it gives none.

    Without a readable JSON object, an output that says `label: violates` (or `complies`) in
    prose still counts.
    """
    read = read_object(output)
    if isinstance(read, ParseFailure):
        match = _LABEL_IN_TEXT.search(output)
        if match is None:
            return read
        label = VIOLATES if match.group(1).casefold() == "violates" else COMPLIES
        return Judgement(label, "", repaired=True)
    obj, repaired = read
    present, value = field(obj, LABEL_KEYS)
    if not present:
        return ParseFailure(FailureReason.MISSING_FIELD, "label")
    judged = label_from_word(value)
    if judged is None:
        return ParseFailure(FailureReason.BAD_LABEL, _excerpt(str(value)))
    _, rationale = field(obj, RATIONALE_KEYS)
    return Judgement(judged, rationale.strip() if isinstance(rationale, str) else "", repaired)


def _excerpt(text: str, limit: int = 120) -> str:
    """The start of `text` on one line, for failure details."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."
