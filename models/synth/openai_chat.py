"""A generator that calls an OpenAI-compatible chat-completions endpoint over HTTP.

Works with vLLM, Ollama, the llama.cpp server (`python -m llama_cpp.server`) and hosted APIs:
`POST {base_url}/chat/completions` with a Bearer key when one is given. Connection errors,
timeouts, 429 and 5xx answers are retried with exponential backoff and jitter, waiting as long
as a `Retry-After` header asks; 401/403/404 and an endpoint that never answers raise
`GeneratorFatalError` subclasses at once (or after the retries) so a run stops with a clear
message. The key is sent in the Authorization header only: it is never logged and never part
of `repr()` or of an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from models.synth.generators import (
    Completion,
    EndpointRefused,
    EndpointUnreachable,
    GeneratorFatalError,
    GeneratorRequestError,
    Message,
    estimate_prompt_tokens,
    estimate_tokens,
)

RETRIED_STATUSES = frozenset({408, 429})
REFUSED_STATUSES = frozenset({401, 403, 404})
#: The longest wait a Retry-After header can impose on one retry.
MAX_RETRY_AFTER_S = 120.0
_PROBE_MESSAGES: list[Message] = [{"role": "user", "content": "Reply with the word OK."}]


class OpenAIChatGenerator:
    """Chat completions from an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._model = model
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._jitter = random.Random()  # noqa: S311 - spreads retries, not a secret
        self._secret = api_key or ""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"OpenAIChatGenerator(base_url={self.base_url!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        """`openai:<model>` (the model the endpoint named when none was given)."""
        return f"openai:{self._model or 'default'}"

    async def probe(self) -> None:
        """Resolve the model name and send a one-token completion: reachable, key accepted."""
        await self.resolve_model()
        try:
            await self.complete(_PROBE_MESSAGES, max_tokens=1, temperature=0.0, seed=0)
        except GeneratorRequestError as exc:
            raise GeneratorFatalError(f"{self.base_url}: the test request failed: {exc}") from exc

    async def resolve_model(self) -> str:
        """The model name: the one given, else the first one `GET {base_url}/models` lists."""
        if self._model:
            return self._model
        payload = _json_of(await self._send("GET", "/models", None))
        models = payload.get("data") if isinstance(payload, dict) else None
        ids = [item.get("id") for item in models or [] if isinstance(item, dict)]
        first = next((model for model in ids if isinstance(model, str) and model), None)
        if first is None:
            raise GeneratorFatalError(f"{self.base_url}/models lists no model: give one with --model")
        self._model = first
        return first

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        """One chat completion; token counts from `usage`, estimated when the answer has none."""
        body = {
            "model": await self.resolve_model(),
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        payload = _json_of(await self._send("POST", "/chat/completions", body))
        return _completion_from(payload, messages, self.base_url)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        """One request with retries; raises the generator errors described in the module docstring."""
        url = f"{self.base_url}{path}"
        for attempt in range(self._max_retries + 1):
            last_try = attempt == self._max_retries
            try:
                response = await self._client.request(method, path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last_try:
                    raise EndpointUnreachable(
                        f"{url}: cannot connect after {attempt + 1} attempts ({_describe(exc)});"
                        " is the server running and --base-url right?"
                    ) from exc
                await self._sleep(self._backoff_s(attempt, None))
                continue
            except httpx.TransportError as exc:
                if last_try:
                    raise GeneratorRequestError(
                        f"{url}: no answer after {attempt + 1} attempts ({_describe(exc)})"
                    ) from exc
                await self._sleep(self._backoff_s(attempt, None))
                continue
            status = response.status_code
            if status in REFUSED_STATUSES:
                raise EndpointRefused(self._redact(_refusal_message(url, response)))
            if status in RETRIED_STATUSES or status >= 500:
                if last_try:
                    raise GeneratorRequestError(f"{url}: answered {status} {attempt + 1} times")
                await self._sleep(
                    self._backoff_s(attempt, retry_after_s(response.headers.get("retry-after")))
                )
                continue
            if status >= 400:
                raise GeneratorRequestError(
                    self._redact(f"{url}: rejected the request: {status} {_short_body(response)}")
                )
            return response
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _redact(self, message: str) -> str:
        """`message` with the key masked, in case an endpoint echoes it in an error body."""
        return message.replace(self._secret, "***") if self._secret else message

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry `attempt + 1`: Retry-After when given, else exponential with jitter."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0**attempt)
        return ceiling / 2 + self._jitter.uniform(0, ceiling / 2)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (a number or an HTTP date), None when absent or bad."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _completion_from(payload: Any, messages: list[Message], base_url: str) -> Completion:
    """The completion of a chat-completions answer; raises `GeneratorRequestError` when it has none."""
    try:
        message = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise GeneratorRequestError(f"{base_url}: the answer has no choices[0].message") from exc
    text = message.get("content") if isinstance(message, dict) else None
    text = text if isinstance(text, str) else ""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
        return Completion(text, prompt_tokens, completion_tokens)
    return Completion(text, estimate_prompt_tokens(messages), estimate_tokens(text), estimated=True)


def _json_of(response: httpx.Response) -> Any:
    """The JSON body of an answer; raises `GeneratorRequestError` when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise GeneratorRequestError(f"{response.request.url}: the answer is not JSON") from exc


def _refusal_message(url: str, response: httpx.Response) -> str:
    """What a 401/403/404 answer means, for a one-line error."""
    status = response.status_code
    if status == 404:
        hint = "check --base-url (OpenAI-compatible servers usually end in /v1) and --model"
    else:
        hint = "the API key is missing or was refused: check the variable --api-key-env names"
    return f"{url}: {status} {_short_body(response)}; {hint}"


def _short_body(response: httpx.Response, limit: int = 200) -> str:
    """The start of an answer's body on one line, for messages."""
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(exc: Exception) -> str:
    """The exception's class and message, e.g. `ConnectError: [Errno 111] Connection refused`."""
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
