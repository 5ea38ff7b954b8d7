"""A scripted stand-in generator for the synth unit tests (tests/synth/test_real_model.py runs the real one).

`ScriptedGenerator` answers generation requests with a prompt made from a hash of the request
(so different requests give unrelated texts and the same request always gives the same text)
and reflection requests with the intended label, unless told otherwise by the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable

from models.synth.generators import Completion, EndpointUnreachable, GeneratorError, Message

#: Words the fake's prompts are made of.
WORDS = (
    "amber",
    "basil",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "island",
    "jasper",
    "kettle",
    "lantern",
    "meadow",
    "nectar",
    "orchid",
    "pebble",
    "quartz",
    "river",
    "saddle",
    "timber",
    "umber",
    "violet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
    "anchor",
    "bramble",
    "cobalt",
    "dune",
    "falcon",
    "garnet",
    "hazel",
    "indigo",
    "juniper",
    "kelp",
    "lilac",
    "maple",
    "nickel",
    "olive",
)


def distinct_text(seed: str, words: int = 12) -> str:
    """A sentence of `words` words picked by the hash of `seed`: unrelated seeds, unrelated texts."""
    digest = hashlib.sha256(seed.encode()).digest()
    return " ".join(WORDS[byte % len(WORDS)] for byte in digest[:words]).capitalize() + "?"


def is_reflection(messages: list[Message]) -> bool:
    return "User message to review" in messages[-1]["content"]


def intended_label(messages: list[Message]) -> int:
    """1 or 0: the label a generation request asks for."""
    return 1 if "The message VIOLATES the policy" in messages[-1]["content"] else 0


def reviewed_text(messages: list[Message]) -> str:
    """The prompt a reflection request asks about."""
    match = re.search(r"<message>\n(.*)\n</message>", messages[-1]["content"], re.DOTALL)
    assert match is not None
    return match.group(1)


def generated_answer(messages: list[Message]) -> str:
    """A valid generation answer whose prompt encodes the intended label as its first word."""
    label = intended_label(messages)
    text = f"{'Bad' if label else 'Fine'} {distinct_text(messages[-1]['content'])}"
    return json.dumps({"prompt": text, "rationale": f"label {label}"})


def agreeing_judgement(messages: list[Message]) -> str:
    """A reflection answer that agrees with the label the prompt's first word encodes."""
    label = "violates" if reviewed_text(messages).startswith("Bad") else "complies"
    return json.dumps({"label": label, "rationale": "checked"})


Answer = Callable[[list[Message]], str]


class ScriptedGenerator:
    """Answers through `generate` and `reflect` functions; records every request it got.

    `fail_after=k` makes request number k+1 (and every later one) raise `fail_with`, as if the
    endpoint went away. `delay_s` keeps each request in flight that long.
    """

    name = "fake"

    def __init__(
        self,
        generate: Answer = generated_answer,
        reflect: Answer = agreeing_judgement,
        *,
        fail_after: int | None = None,
        fail_with: type[GeneratorError] = EndpointUnreachable,
        delay_s: float = 0.0,
        usage: tuple[int, int] = (100, 20),
    ) -> None:
        self.generate = generate
        self.reflect = reflect
        self.fail_after = fail_after
        self.fail_with = fail_with
        self.delay_s = delay_s
        self.usage = usage
        self.requests: list[list[Message]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise self.fail_with("scripted failure")
        self.requests.append(messages)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            answer = self.reflect(messages) if is_reflection(messages) else self.generate(messages)
        finally:
            self.in_flight -= 1
        return Completion(answer, *self.usage)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def request_texts(self) -> list[str]:
        """The user message of every request, in order."""
        return [messages[-1]["content"] for messages in self.requests]
