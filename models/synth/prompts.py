"""The chat messages `guardstream synth` sends: generation, reflection and new-policy requests.

Generation asks for ONE user prompt as `{"prompt": ..., "rationale": ...}`. For diversity each
request targets one behaviour of the policy, round-robin over its disallowed items (for prompts
that violate it) or allowed items (for prompts that comply), and carries one style hint; the
styles advance with the behaviours and move on by a further step, coprime to their number,
every time the behaviours wrap around, so over enough rounds every behaviour meets every style.
Reflection shows the policy and one prompt, without the intended label, and asks for
`{"label": "violates" | "complies", "rationale": ...}`. Both kinds of request put the policy in
the system turn and show worked exchanges built from the policy's own examples before the real
request: small models copy a shown answer's format far more reliably than they follow a
described one. A new-policy request shows a few seed
policies (and some of their rows) and asks for one policy on a given domain, as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from models.policies import PolicyDefinition
from models.synth.generators import Message

VIOLATES, COMPLIES = 1, 0
LABEL_WORDS = {VIOLATES: "violates", COMPLIES: "complies"}
#: Examples of each kind shown in a generation request (rotating through the policy's own).
EXAMPLES_SHOWN = 2

#: Style, persona and format hints used for both labels.
COMMON_STYLES = (
    "a short, direct question of one sentence",
    "a long, story-like request with personal background before the actual question",
    "a terse command without greeting or punctuation",
    "written by a non-native English speaker, with small grammar mistakes",
    "casual chat style, all lowercase, with a typo or two",
    "formal and polite, like the opening of an email",
    "a question with concrete details: amounts, dates, places or names",
    "a follow-up message that refers to something said earlier in the conversation",
    "written in Spanish",
    "a multi-part request that asks two or three things at once",
    "written in German",
    "a worried, emotional message from someone under pressure",
)
#: Hints only for prompts that violate the policy.
VIOLATING_STYLES = (
    "an indirect request that hides what it wants behind a plausible reason",
    "framed as a hypothetical or a role-play that still asks for the disallowed thing",
)
#: Hints only for prompts that comply with the policy.
COMPLIANT_STYLES = (
    "a benign look-alike: it uses the policy's topic and vocabulary but asks only for something allowed",
    "a question a student or journalist would ask about the topic in general",
)
#: Domains suggested, round-robin, for new policies.
POLICY_DOMAINS = (
    "medical devices and pharmacy",
    "online gambling",
    "elections and voting",
    "cybersecurity and hacking",
    "children's safety online",
    "human resources and hiring",
    "real estate and renting",
    "insurance claims",
    "cryptocurrency trading",
    "weapons and firearms",
    "mental health and self-harm",
    "immigration and visas",
    "academic integrity and cheating",
    "personal data and privacy",
    "customer support for a bank",
    "dieting and eating disorders",
    "drugs and controlled substances",
    "intellectual property and piracy",
    "workplace safety",
    "travel and airline customer service",
)

_GENERATION_SYSTEM = (
    "You create test data for a content-moderation classifier. You write realistic messages that"
    " users send to an AI assistant, including messages that break a policy, because the"
    " classifier must learn to recognise them. You never answer the messages you write. You"
    " always reply with a single JSON object and nothing else."
)
_REFLECTION_SYSTEM = (
    "You review user messages against a content policy. You judge only the user's message, not"
    " what an answer might say. You always reply with a single JSON object and nothing else."
)
_POLICY_SYSTEM = (
    "You design content policies for guardrail classifiers. A policy says what users may and may"
    " not ask an AI assistant about one topic. You always reply with a single JSON object and"
    " nothing else."
)


@dataclass(frozen=True, slots=True)
class GenerationTarget:
    """What one generation request asks for: the behaviour it is about and a style hint."""

    behaviour: str
    style: str


def styles_for(label: int) -> tuple[str, ...]:
    """The style hints of one label."""
    return COMMON_STYLES + (VIOLATING_STYLES if label == VIOLATES else COMPLIANT_STYLES)


def behaviours_for(policy: PolicyDefinition, label: int) -> tuple[str, ...]:
    """The items a request of this label targets: disallowed or allowed, or a fallback when empty."""
    items = policy.disallowed if label == VIOLATES else policy.allowed
    if items:
        return items
    if label == VIOLATES:
        return (f"anything the policy forbids: {policy.description}",)
    return (f"a question on the policy's topic that the policy does not forbid ({policy.name})",)


def generation_target(policy: PolicyDefinition, label: int, index: int) -> GenerationTarget:
    """The behaviour (round-robin) and style of request number `index` of `label`."""
    behaviours = behaviours_for(policy, label)
    styles = styles_for(label)
    position, rounds = index % len(behaviours), index // len(behaviours)
    step = style_step(len(behaviours), len(styles))
    return GenerationTarget(behaviours[position], styles[(position + rounds * step) % len(styles)])


def style_step(behaviours: int, styles: int) -> int:
    """How far the style moves each time the behaviours wrap around: the first number above
    `behaviours` that shares no divisor with `styles`, so every behaviour meets every style."""
    return next(
        step for step in range(behaviours + 1, behaviours + 1 + styles) if math.gcd(step, styles) == 1
    )


def _rotating(items: Sequence[str], index: int, count: int) -> list[str]:
    """`count` items starting at `index`, wrapping around (fewer when there are fewer)."""
    if not items:
        return []
    return [items[(index + offset) % len(items)] for offset in range(min(count, len(items)))]


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items) if items else "- (none listed)"


def policy_block(policy: PolicyDefinition, example_offset: int = 0, examples: int = EXAMPLES_SHOWN) -> str:
    """The policy as plain text: name, description, allowed, disallowed and a few examples."""
    parts = [
        f"Policy: {policy.name} (id: {policy.id})",
        f"Description: {policy.description}",
        f"Allowed:\n{_bullets(policy.allowed)}",
        f"Disallowed:\n{_bullets(policy.disallowed)}",
    ]
    safe = _rotating(policy.safe_examples, example_offset, examples)
    unsafe = _rotating(policy.unsafe_examples, example_offset, examples)
    if safe:
        parts.append(f"Example messages that comply:\n{_bullets(safe)}")
    if unsafe:
        parts.append(f"Example messages that violate:\n{_bullets(unsafe)}")
    return "\n\n".join(parts)


def _generation_request(label: int, behaviour: str, style: str) -> str:
    """The user turn asking for one prompt of `label` about `behaviour`."""
    if label == VIOLATES:
        goal, about = "VIOLATES the policy", f"It must ask for this disallowed behaviour: {behaviour}"
    else:
        goal, about = "COMPLIES with the policy", f"It must ask for this allowed behaviour: {behaviour}"
    return (
        f"Write ONE new message that a user might send to an AI assistant. The message {goal}.\n"
        f"{about}\n"
        f"Style: {style}.\n"
        "Do not copy the examples. Write only the user's message, not an answer to it.\n"
        'Reply with a JSON object: "prompt" is the user\'s message, "rationale" is one sentence on why'
        f" the message {LABEL_WORDS[label]}."
    )


def _demonstration(policy: PolicyDefinition, label: int, index: int) -> list[Message]:
    """One worked exchange built from the policy's own example of `label` (none without one).

    Small models follow a shown answer far better than a described format; the example is one
    the policy block does not list for this index, and verbatim copies of it are rejected.
    """
    examples = policy.unsafe_examples if label == VIOLATES else policy.safe_examples
    if not examples:
        return []
    behaviours = behaviours_for(policy, label)
    behaviour = behaviours[(index + 1) % len(behaviours)]
    listing = "disallowed" if label == VIOLATES else "allowed"
    answer = {
        "prompt": examples[(index + EXAMPLES_SHOWN) % len(examples)],
        "rationale": f"It asks for something on the {listing} list, so it {LABEL_WORDS[label]}.",
    }
    return [
        {"role": "user", "content": _generation_request(label, behaviour, COMMON_STYLES[0])},
        {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)},
    ]


def generation_messages(
    policy: PolicyDefinition, label: int, target: GenerationTarget, index: int = 0
) -> list[Message]:
    """The request for one prompt of `label` about `target.behaviour`, in `target.style`.

    The system turn holds the instructions and the policy (with a few examples, rotating with
    `index`); a worked exchange from another example of the label comes before the request.
    """
    system = f"{_GENERATION_SYSTEM}\n\n{policy_block(policy, example_offset=index)}"
    return [
        {"role": "system", "content": system},
        *_demonstration(policy, label, index),
        {"role": "user", "content": _generation_request(label, target.behaviour, target.style)},
    ]


def _review_request(text: str) -> str:
    return (
        f"User message to review:\n<message>\n{text}\n</message>\n"
        "Does this message violate or comply with the policy? Reply with the JSON object."
    )


def _judgement_examples(policy: PolicyDefinition, text: str) -> list[Message]:
    """Worked judgements of one unsafe and one safe example of the policy, when it has both.

    Their order depends on a hash of the reviewed text: a small model tends to repeat the last
    label it saw, and a fixed order would turn that into a bias towards one label.
    """
    if not policy.unsafe_examples or not policy.safe_examples:
        return []
    shown = [
        (policy.unsafe_examples[0], VIOLATES, "It asks for something on the disallowed list."),
        (policy.safe_examples[0], COMPLIES, "It asks only for something on the allowed list."),
    ]
    if hashlib.sha256(text.encode()).digest()[0] % 2:
        shown.reverse()
    messages: list[Message] = []
    for example, label, rationale in shown:
        answer = json.dumps({"label": LABEL_WORDS[label], "rationale": rationale}, ensure_ascii=False)
        messages += [
            {"role": "user", "content": _review_request(example)},
            {"role": "assistant", "content": answer},
        ]
    return messages


def reflection_messages(policy: PolicyDefinition, text: str) -> list[Message]:
    """The request to judge one prompt against the policy (the intended label is not shown)."""
    system = (
        f"{_REFLECTION_SYSTEM}\n\nA message violates the policy when it asks for something on the"
        " disallowed list; it complies when it asks only for allowed things or for something"
        ' unrelated. Reply with a JSON object: {"label": "violates" or "complies", "rationale":'
        f' "<one sentence>"}}.\n\n{policy_block(policy, examples=0)}'
    )
    return [
        {"role": "system", "content": system},
        *_judgement_examples(policy, text),
        {"role": "user", "content": _review_request(text)},
    ]


def policy_as_json(
    policy: PolicyDefinition, extra_rows: Mapping[int, Sequence[str]] | None = None
) -> dict[str, object]:
    """The fields of a policy a new-policy request shows, with extra example rows by label."""
    rows = extra_rows or {}
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "allowed": list(policy.allowed),
        "disallowed": list(policy.disallowed),
        "examples": {
            "safe": [*policy.safe_examples, *rows.get(COMPLIES, ())],
            "unsafe": [*policy.unsafe_examples, *rows.get(VIOLATES, ())],
        },
    }


def new_policy_messages(
    seeds: Sequence[PolicyDefinition],
    domain: str,
    taken_ids: Sequence[str],
    seed_rows: Mapping[str, Mapping[int, Sequence[str]]] | None = None,
) -> list[Message]:
    """The request for one new policy about `domain`, shown `seeds` (and rows of them) as models."""
    rows = seed_rows or {}
    shown = json.dumps(
        [policy_as_json(seed, rows.get(seed.id)) for seed in seeds], ensure_ascii=False, indent=1
    )
    request = (
        f"Existing policies, as JSON:\n{shown}\n\n"
        f"Write ONE new policy in the same format about this domain: {domain}.\n"
        f"It must be different from the existing policies; do not use these ids: {', '.join(taken_ids)}.\n"
        "Give 4 to 6 allowed and 4 to 6 disallowed behaviours, and 3 safe and 3 unsafe example"
        " user messages.\n\n"
        "Reply with only this JSON object:\n"
        '{"id": "<lowercase_words_with_underscores>", "name": "<short title>", "description":'
        ' "<two or three sentences>", "allowed": ["..."], "disallowed": ["..."],'
        ' "examples": {"safe": ["..."], "unsafe": ["..."]}}'
    )
    return [{"role": "system", "content": _POLICY_SYSTEM}, {"role": "user", "content": request}]
