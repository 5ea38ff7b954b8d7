"""The messages of generation, reflection and new-policy requests."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

from models.policies import PolicyDefinition
from models.synth.prompts import (
    COMPLIES,
    POLICY_DOMAINS,
    VIOLATES,
    behaviours_for,
    generation_messages,
    generation_target,
    new_policy_messages,
    reflection_messages,
    styles_for,
)


def request_of(messages: list) -> str:
    """The last user turn: the request itself."""
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    return messages[-1]["content"]


def everything(messages: list) -> str:
    return "\n".join(message["content"] for message in messages)


def test_violating_request_names_policy_target_examples_and_label(tax_policy: PolicyDefinition) -> None:
    target = generation_target(tax_policy, VIOLATES, 2)
    messages = generation_messages(tax_policy, VIOLATES, target, 2)
    request, text = request_of(messages), everything(messages)
    assert tax_policy.description in messages[0]["content"] and tax_policy.name in messages[0]["content"]
    assert target.behaviour == tax_policy.disallowed[2]
    assert f"It must ask for this disallowed behaviour: {tax_policy.disallowed[2]}" in request
    assert f"Style: {target.style}." in request
    assert "The message VIOLATES the policy." in request
    assert "COMPLIES" not in text
    # every allowed and disallowed item is listed, and examples of both kinds are shown
    assert all(
        f"- {item}" in messages[0]["content"] for item in (*tax_policy.allowed, *tax_policy.disallowed)
    )
    assert sum(example in messages[0]["content"] for example in tax_policy.unsafe_examples) == 2
    assert sum(example in messages[0]["content"] for example in tax_policy.safe_examples) == 2
    assert '"prompt" is the user\'s message' in request


def test_a_worked_exchange_comes_before_the_request(tax_policy: PolicyDefinition) -> None:
    messages = generation_messages(tax_policy, VIOLATES, generation_target(tax_policy, VIOLATES, 0), 0)
    assert [message["role"] for message in messages] == ["system", "user", "assistant", "user"]
    demo = json.loads(messages[2]["content"])
    assert demo["prompt"] == tax_policy.unsafe_examples[2]  # not one of the two the block lists
    assert demo["prompt"] not in messages[0]["content"]
    assert "disallowed behaviour: " + tax_policy.disallowed[1] in messages[1]["content"]
    bare = dataclasses.replace(tax_policy, unsafe_examples=())
    assert len(generation_messages(bare, VIOLATES, generation_target(bare, VIOLATES, 0), 0)) == 2


def test_compliant_request_targets_an_allowed_item(tax_policy: PolicyDefinition) -> None:
    target = generation_target(tax_policy, COMPLIES, 0)
    messages = generation_messages(tax_policy, COMPLIES, target, 0)
    text = request_of(messages)
    assert json.loads(messages[2]["content"])["prompt"] in tax_policy.safe_examples
    assert target.behaviour == tax_policy.allowed[0]
    assert f"It must ask for this allowed behaviour: {tax_policy.allowed[0]}" in text
    assert "The message COMPLIES with the policy." in text
    assert "VIOLATES" not in everything(messages)


def test_examples_rotate_with_the_index(tax_policy: PolicyDefinition) -> None:
    first = generation_messages(tax_policy, VIOLATES, generation_target(tax_policy, VIOLATES, 0), 0)[0][
        "content"
    ]
    second = generation_messages(tax_policy, VIOLATES, generation_target(tax_policy, VIOLATES, 1), 1)[0][
        "content"
    ]
    shown_first = {example for example in tax_policy.unsafe_examples if example in first}
    shown_second = {example for example in tax_policy.unsafe_examples if example in second}
    assert shown_first != shown_second


def test_targets_round_robin_evenly_and_styles_vary(tax_policy: PolicyDefinition) -> None:
    items = tax_policy.disallowed
    rounds = 3
    targets = [generation_target(tax_policy, VIOLATES, index) for index in range(len(items) * rounds)]
    assert Counter(target.behaviour for target in targets) == dict.fromkeys(items, rounds)
    # the same behaviour does not always come with the same style...
    first_item_styles = {target.style for target in targets if target.behaviour == items[0]}
    assert len(first_item_styles) == rounds
    # ...and over as many rounds as there are styles, it meets every one
    styles = styles_for(VIOLATES)
    every_round = [
        generation_target(tax_policy, VIOLATES, 1 + len(items) * r).style for r in range(len(styles))
    ]
    assert sorted(every_round) == sorted(styles)
    # behaviours of one round get different styles
    assert len({target.style for target in targets[: len(items)]}) == len(items)


def test_label_specific_styles(tax_policy: PolicyDefinition) -> None:
    look_alike = next(style for style in styles_for(COMPLIES) if "look-alike" in style)
    assert look_alike not in styles_for(VIOLATES)
    assert any("Spanish" in style or "German" in style for style in styles_for(VIOLATES))


def test_policy_without_allowed_items_still_gets_a_target(tax_policy: PolicyDefinition) -> None:
    bare = dataclasses.replace(tax_policy, allowed=())
    (behaviour,) = behaviours_for(bare, COMPLIES)
    assert tax_policy.name in behaviour
    assert generation_target(bare, COMPLIES, 5).behaviour == behaviour


def test_reflection_shows_the_prompt_but_not_the_intended_label(tax_policy: PolicyDefinition) -> None:
    prompt = "Should I file jointly with my husband this year?"
    messages = reflection_messages(tax_policy, prompt)
    assert f"<message>\n{prompt}\n</message>" in request_of(messages)
    assert tax_policy.description in messages[0]["content"]
    assert all(item in messages[0]["content"] for item in tax_policy.disallowed)
    assert '{"label": "violates" or "complies"' in messages[0]["content"]
    assert "The message VIOLATES" not in everything(messages) and "The message COMPLIES" not in everything(
        messages
    )


def test_reflection_examples_show_both_labels_in_an_order_set_by_the_text(
    tax_policy: PolicyDefinition,
) -> None:
    orders = set()
    for number in range(8):
        messages = reflection_messages(tax_policy, f"question number {number} about taxes")
        assert [message["role"] for message in messages] == [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
        ]
        labels = tuple(json.loads(messages[index]["content"])["label"] for index in (2, 4))
        assert sorted(labels) == ["complies", "violates"]
        assert messages == reflection_messages(tax_policy, f"question number {number} about taxes")
        orders.add(labels)
    assert len(orders) == 2


def test_new_policy_request_shows_seeds_rows_domain_and_taken_ids(tax_policy: PolicyDefinition) -> None:
    rows = {
        "tax_advice": {VIOLATES: ["How do I dodge tax on my bonus?"], COMPLIES: ["What is a tax credit?"]}
    }
    messages = new_policy_messages([tax_policy], POLICY_DOMAINS[3], ["tax_advice", "legal_advice"], rows)
    assert [message["role"] for message in messages] == ["system", "user"]
    text = request_of(messages)
    assert tax_policy.description in text
    assert "How do I dodge tax on my bonus?" in text and "What is a tax credit?" in text
    assert POLICY_DOMAINS[3] in text
    assert "do not use these ids: tax_advice, legal_advice" in text
    for name in (
        '"id"',
        '"name"',
        '"description"',
        '"allowed"',
        '"disallowed"',
        '"examples"',
        '"safe"',
        '"unsafe"',
    ):
        assert name in text
