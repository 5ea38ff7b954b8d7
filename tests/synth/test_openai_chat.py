"""OpenAIChatGenerator against a tiny local HTTP server: retries, clear errors, usage, no key leaks."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

from models.synth.generators import EndpointRefused, EndpointUnreachable, GeneratorRequestError, Message
from models.synth.openai_chat import OpenAIChatGenerator, retry_after_s

KEY = "sk-test-very-secret-key"
MESSAGES: list[Message] = [{"role": "user", "content": "Write a prompt."}]


def chat_answer(text: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    if usage is not None:
        body["usage"] = usage
    return body


@dataclass
class Scripted:
    """Answers (status, headers, JSON body) in order, the last one repeated; records requests."""

    answers: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            {
                "path": request.path,
                "method": request.method,
                "auth": request.headers.get("Authorization"),
                "body": body,
            }
        )
        status, headers, payload = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        return web.Response(
            status=status, headers=headers, text=json.dumps(payload), content_type="application/json"
        )


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Scripted]]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v1", scripted
    await runner.cleanup()


class Sleeps:
    """A stand-in for asyncio.sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(base_url: str, sleeps: Sleeps | None = None, **options: Any) -> OpenAIChatGenerator:
    return OpenAIChatGenerator(base_url, model="tiny", api_key=KEY, sleep=sleeps or Sleeps(), **options)


async def test_completion_with_usage_and_bearer_key(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(200, {}, chat_answer("hello", {"prompt_tokens": 12, "completion_tokens": 3}))]
    generator = client(base_url)
    completion = await generator.complete(MESSAGES, max_tokens=20, temperature=0.5, seed=7)
    await generator.aclose()
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("hello", 12, 3)
    assert not completion.estimated
    (request,) = scripted.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == f"Bearer {KEY}"
    assert request["body"] == {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 20,
        "temperature": 0.5,
        "seed": 7,
    }


async def test_retries_429_honouring_retry_after(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [
        (429, {"Retry-After": "3"}, {"error": "slow down"}),
        (429, {}, {"error": "slow down"}),
        (200, {}, chat_answer("done", {"prompt_tokens": 1, "completion_tokens": 1})),
    ]
    sleeps = Sleeps()
    generator = client(base_url, sleeps, backoff_base_s=0.5)
    completion = await generator.complete(MESSAGES, max_tokens=5, temperature=0, seed=0)
    await generator.aclose()
    assert completion.text == "done" and len(scripted.requests) == 3
    assert sleeps.delays[0] == 3.0  # what Retry-After asked
    assert 0.5 <= sleeps.delays[1] <= 1.0  # exponential with jitter: between half and all of 0.5 * 2


async def test_retries_500_then_succeeds(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(500, {}, {"error": "boom"}), (503, {}, {}), (200, {}, chat_answer("ok"))]
    sleeps = Sleeps()
    generator = client(base_url, sleeps, backoff_base_s=1.0)
    completion = await generator.complete(MESSAGES, max_tokens=5, temperature=0, seed=0)
    await generator.aclose()
    assert completion.text == "ok" and len(scripted.requests) == 3
    assert 0.5 <= sleeps.delays[0] <= 1.0 and 1.0 <= sleeps.delays[1] <= 2.0
    assert completion.estimated and completion.completion_tokens == 1 and completion.prompt_tokens > 0


async def test_retries_run_out(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(502, {}, {})]
    generator = client(base_url, max_retries=2)
    with pytest.raises(GeneratorRequestError, match="answered 502 3 times"):
        await generator.complete(MESSAGES, max_tokens=5, temperature=0, seed=0)
    await generator.aclose()
    assert len(scripted.requests) == 3


async def test_401_fails_at_once_without_leaking_the_key(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(401, {}, {"error": {"message": f"Incorrect API key provided: {KEY}"}})]
    generator = client(base_url)
    with pytest.raises(EndpointRefused) as info:
        await generator.complete(MESSAGES, max_tokens=5, temperature=0, seed=0)
    await generator.aclose()
    assert len(scripted.requests) == 1
    message = str(info.value)
    assert "401" in message and "API key" in message and KEY not in message
    assert KEY not in repr(generator) and "tiny" in repr(generator)


async def test_404_names_the_base_url(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(404, {}, {"error": "model not found"})]
    generator = client(base_url)
    with pytest.raises(EndpointRefused, match="--base-url"):
        await generator.probe()
    await generator.aclose()


async def test_other_4xx_is_a_request_error(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(400, {}, {"error": "context too long"})]
    generator = client(base_url)
    with pytest.raises(GeneratorRequestError, match="context too long"):
        await generator.complete(MESSAGES, max_tokens=5, temperature=0, seed=0)
    await generator.aclose()
    assert len(scripted.requests) == 1


async def test_unreachable_endpoint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    sleeps = Sleeps()
    generator = client(f"http://127.0.0.1:{port}/v1", sleeps, max_retries=2)
    with pytest.raises(EndpointUnreachable, match="cannot connect after 3 attempts"):
        await generator.probe()
    await generator.aclose()
    assert len(sleeps.delays) == 2


async def test_model_from_the_models_list(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(200, {}, {"data": [{"id": "served-model"}]}), (200, {}, chat_answer("OK"))]
    generator = OpenAIChatGenerator(base_url, sleep=Sleeps())
    await generator.probe()
    await generator.aclose()
    assert generator.name == "openai:served-model"
    assert [request["path"] for request in scripted.requests] == ["/v1/models", "/v1/chat/completions"]
    assert scripted.requests[1]["body"]["model"] == "served-model" and scripted.requests[1]["auth"] is None


async def test_malformed_answer_is_a_request_error(server: tuple[str, Scripted]) -> None:
    base_url, scripted = server
    scripted.answers = [(200, {}, {"unexpected": True})]
    generator = client(base_url)
    with pytest.raises(GeneratorRequestError, match="choices"):
        await generator.complete(MESSAGES, max_tokens=5, temperature=0, seed=0)
    await generator.aclose()


def test_retry_after_header_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("7") == 7.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == pytest.approx(30)
    assert retry_after_s(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None and retry_after_s("") is None
