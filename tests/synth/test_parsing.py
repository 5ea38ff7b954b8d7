"""Generator output -> prompt / judgement, repairs and counted failure reasons."""

from __future__ import annotations

import pytest

from models.policies import PolicyDefinition
from models.synth.lenient_json import JsonNotFound, balanced_end, find_object
from models.synth.parsing import (
    FailureReason,
    GeneratedPrompt,
    Judgement,
    ParseFailure,
    TextLimits,
    canonical,
    is_refusal,
    parse_generated,
    parse_judgement,
)

PROMPT = "Can I deduct my home office if I rent a flat in Berlin?"


def generated(output: str, policy: PolicyDefinition, limits: TextLimits | None = None) -> GeneratedPrompt:
    result = parse_generated(output, policy, limits)
    assert isinstance(result, GeneratedPrompt), result
    return result


def failure(output: str, policy: PolicyDefinition, limits: TextLimits | None = None) -> FailureReason:
    result = parse_generated(output, policy, limits)
    assert isinstance(result, ParseFailure), result
    return result.reason


def test_plain_object(tax_policy: PolicyDefinition) -> None:
    result = generated(f'{{"prompt": "{PROMPT}", "rationale": "asks about own deduction"}}', tax_policy)
    assert result == GeneratedPrompt(PROMPT, "asks about own deduction", repaired=False)


def test_fenced_json_with_prose_around(tax_policy: PolicyDefinition) -> None:
    output = (
        "Sure! Here is the JSON you asked for:\n```json\n"
        f'{{"prompt": "{PROMPT}", "rationale": "personal deduction"}}\n```\nLet me know if you need more.'
    )
    result = generated(output, tax_policy)
    assert result.text == PROMPT and result.rationale == "personal deduction" and not result.repaired


def test_prose_and_trailing_text_without_fence(tax_policy: PolicyDefinition) -> None:
    output = f'Output: {{"prompt": "{PROMPT}", "rationale": "r"}} and then {{"prompt": "another"}} trailing'
    assert generated(output, tax_policy).text == PROMPT


def test_truncated_object_is_repaired(tax_policy: PolicyDefinition) -> None:
    result = generated(f'{{"prompt": "{PROMPT}", "rationale": "The user asks for advice on th', tax_policy)
    assert result.text == PROMPT
    assert result.rationale == "The user asks for advice on th"
    assert result.repaired


def test_missing_closing_brace_and_a_key_cut_off(tax_policy: PolicyDefinition) -> None:
    assert generated(f'{{"prompt": "{PROMPT}", "rationale": "r"', tax_policy).repaired
    # the rationale key was cut before its value: the prompt survives, the field is missing
    assert failure(f'{{"prompt": "{PROMPT}", "rational', tax_policy) is FailureReason.MISSING_FIELD
    assert failure(f'{{"prompt": "{PROMPT}", "rationale":', tax_policy) is FailureReason.MISSING_FIELD


def test_single_quotes_with_an_apostrophe_inside(tax_policy: PolicyDefinition) -> None:
    output = "{'prompt': 'I don't get it, can I claim my kid's daycare?', 'rationale': 'own claim'}"
    result = generated(output, tax_policy)
    assert result.text == "I don't get it, can I claim my kid's daycare?"
    assert result.rationale == "own claim" and result.repaired


def test_trailing_comma_and_python_literals(tax_policy: PolicyDefinition) -> None:
    result = generated(f'{{"prompt": "{PROMPT}", "rationale": "r", "extra": None,}}', tax_policy)
    assert result.text == PROMPT and result.repaired


def test_raw_newline_and_unknown_escape_inside_a_string(tax_policy: PolicyDefinition) -> None:
    result = generated('{"prompt": "Line one\nline two \\q here", "rationale": "r",}', tax_policy)
    assert result.text == "Line one\nline two q here"


def test_refusals(tax_policy: PolicyDefinition) -> None:
    assert failure("I'm sorry, but I can't help with creating that.", tax_policy) is FailureReason.REFUSAL
    assert failure("As an AI language model, I cannot do that.", tax_policy) is FailureReason.REFUSAL
    refusing_prompt = '{"prompt": "I cannot assist with tax evasion requests.", "rationale": "r"}'
    assert failure(refusing_prompt, tax_policy) is FailureReason.REFUSAL
    # a user who "can't figure out" something is not refusing
    assert not is_refusal("I can't figure out whether I should file jointly")
    assert is_refusal("I am not able to provide that. Anything else?")


def test_missing_and_mistyped_fields(tax_policy: PolicyDefinition) -> None:
    assert failure('{"rationale": "r"}', tax_policy) is FailureReason.MISSING_FIELD
    assert failure(f'{{"prompt": "{PROMPT}"}}', tax_policy) is FailureReason.MISSING_FIELD
    assert failure('{"prompt": 42, "rationale": "r"}', tax_policy) is FailureReason.WRONG_TYPE
    assert failure(f'{{"prompt": "{PROMPT}", "rationale": ["a"]}}', tax_policy) is FailureReason.WRONG_TYPE


def test_a_repeated_key_keeps_its_first_value(tax_policy: PolicyDefinition) -> None:
    strict = f'{{"prompt": "{PROMPT}", "rationale": "r", "prompt": "It asks for the history of taxes."}}'
    assert generated(strict, tax_policy).text == PROMPT
    rambling = f'{{"prompt": "{PROMPT}", "rationale": "r", "prompt": "It asks for the hist'
    assert generated(rambling, tax_policy).text == PROMPT


def test_field_names_are_matched_loosely(tax_policy: PolicyDefinition) -> None:
    result = generated(f'{{"Prompt ": "{PROMPT}", "Reason": "r"}}', tax_policy)
    assert result.text == PROMPT and result.rationale == "r"


def test_non_objects_and_no_json(tax_policy: PolicyDefinition) -> None:
    assert failure(f'["{PROMPT}"]', tax_policy) is FailureReason.NOT_OBJECT
    assert failure('"just a string"', tax_policy) is FailureReason.NOT_OBJECT
    assert failure(PROMPT, tax_policy) is FailureReason.NO_JSON
    assert failure("{ this is : not [ json", tax_policy) is FailureReason.INVALID_JSON
    assert failure("   \n ", tax_policy) is FailureReason.EMPTY_OUTPUT


def test_copies_of_the_policy_are_rejected(tax_policy: PolicyDefinition) -> None:
    example = tax_policy.unsafe_examples[1]
    shouting = f'{{"prompt": "  {example.upper()}  ", "rationale": "r"}}'
    assert failure(shouting, tax_policy) is FailureReason.COPIED_EXAMPLE
    quoted_safe = f'{{"prompt": "\\"{tax_policy.safe_examples[0]}\\"", "rationale": "r"}}'
    assert failure(quoted_safe, tax_policy) is FailureReason.COPIED_EXAMPLE
    item = f'{{"prompt": "{tax_policy.disallowed[0]}.", "rationale": "r"}}'
    assert failure(item, tax_policy) is FailureReason.COPIED_POLICY
    # a number changed is still a copy; a new question on the same topic is not
    near = tax_policy.unsafe_examples[0].replace("80,000", "20,000")
    assert near != tax_policy.unsafe_examples[0]
    assert failure(f'{{"prompt": "{near}", "rationale": "r"}}', tax_policy) is FailureReason.COPIED_EXAMPLE
    assert generated(f'{{"prompt": "{PROMPT}", "rationale": "r"}}', tax_policy).text == PROMPT


def test_length_limits_and_placeholders(tax_policy: PolicyDefinition) -> None:
    assert failure('{"prompt": "", "rationale": "r"}', tax_policy) is FailureReason.EMPTY_PROMPT
    assert failure('{"prompt": "Tax?", "rationale": "r"}', tax_policy) is FailureReason.TOO_SHORT
    limits = TextLimits(min_chars=5, max_chars=30)
    assert (
        failure(f'{{"prompt": "{PROMPT}", "rationale": "r"}}', tax_policy, limits) is FailureReason.TOO_LONG
    )
    placeholder = '{"prompt": "<the user\'s message>", "rationale": "r"}'
    assert failure(placeholder, tax_policy) is FailureReason.PLACEHOLDER


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ('{"label": "violates", "rationale": "asks for own deduction"}', 1),
        ('{"label": "complies", "rationale": "general"}', 0),
        ('```json\n{"Label": "Non-compliant"}\n```', 1),
        ("{'verdict': 'safe'}", 0),
        ('{"label": "violates", "rationale": "cut of', 1),
        ("The label: violates, because it asks for a personal strategy.", 1),
    ],
)
def test_judgements(output: str, label: int) -> None:
    result = parse_judgement(output)
    assert isinstance(result, Judgement), result
    assert result.label == label


def test_unreadable_judgements() -> None:
    for output, reason in (
        ('{"label": "maybe"}', FailureReason.BAD_LABEL),
        ('{"rationale": "hmm"}', FailureReason.MISSING_FIELD),
        ("It is hard to say.", FailureReason.NO_JSON),
        ('{"label": true}', FailureReason.BAD_LABEL),
    ):
        result = parse_judgement(output)
        assert isinstance(result, ParseFailure) and result.reason is reason, (output, result)


def test_find_object_internals() -> None:
    text = 'x {"a": "}", "b": [1, {"c": 2}]} y'
    assert balanced_end(text, 2) == len(text) - 3
    assert find_object(text).value == {"a": "}", "b": [1, {"c": 2}]}
    assert find_object('{"a": [1, 2').value == {"a": [1, 2]}
    with pytest.raises(JsonNotFound) as info:
        find_object("no braces here")
    assert not info.value.had_brace


def test_canonical_form() -> None:
    assert canonical('  "Hello,   World!"  ') == "hello, world"
