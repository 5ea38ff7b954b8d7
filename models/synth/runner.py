"""Send the generation and reflection requests of a plan, concurrently, into the work directory.

Each request runs as one task: generate (unless the work directory already has the key), then
reflect on an accepted prompt (unless already reflected or reflection is off). Every finished
request is appended to the work files at once. At most `concurrency` requests are in
flight (an asyncio semaphore, held by a request from its generation through its reflection, so
reflections follow their prompts closely) and a token bucket spaces calls when a rate limit is set.

What happens to failures:

- unusable output (no JSON, refusal, copy, ...): recorded with its reason, never retried;
- a request that failed at the generator (`GeneratorRequestError`, after the client's own
  retries): counted as `generator_error` for this run, not recorded, so a rerun retries it;
- a `GeneratorFatalError` (endpoint gone, key refused): the run stops and re-raises it; the
  finished requests stay in the work directory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm import tqdm

from models.synth.generators import Completion, Generator, GeneratorFatalError, GeneratorRequestError, Message
from models.synth.parsing import ParseFailure, TextLimits, parse_generated, parse_judgement
from models.synth.prompts import LABEL_WORDS, generation_messages, reflection_messages
from models.synth.ratelimit import Unlimited
from models.synth.requests import GenerationRequest
from models.synth.workdir import WorkDir

log = logging.getLogger("guardstream.synth")

OK, FAILED = "ok", "failed"
AGREED, DISAGREED, UNPARSED = "agreed", "disagreed", "unparsed"


class RateLimiter(Protocol):
    async def acquire(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RequestSettings:
    """How requests are sent and their output checked."""

    max_tokens: int = 320
    temperature: float = 0.9
    reflection_temperature: float = 0.0
    seed: int = 0
    concurrency: int = 4
    reflect: bool = True
    limits: TextLimits = field(default_factory=TextLimits)
    show_progress: bool = True


@dataclass
class RunStats:
    """What this run sent and spent (the work files hold what earlier runs did)."""

    generation_sent: int = 0
    reflection_sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    generation_errors: int = 0
    reflection_errors: int = 0
    resumed: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0

    def add_usage(self, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.tokens_estimated = self.tokens_estimated or completion.estimated


class SynthRunner:
    """Runs a plan against a generator (see the module docstring)."""

    def __init__(
        self,
        generator: Generator,
        work: WorkDir,
        settings: RequestSettings,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.generator = generator
        self.work = work
        self.settings = settings
        self.limiter: RateLimiter = limiter or Unlimited()
        self.stats = RunStats()
        self._semaphore = asyncio.Semaphore(settings.concurrency)

    async def run(self, plan: Sequence[GenerationRequest]) -> RunStats:
        """Finish every request of `plan` not finished before; raises `GeneratorFatalError`."""
        started = time.perf_counter()
        pending = [request for request in plan if not self._finished(request)]
        self.stats.resumed = len(plan) - len(pending)
        with tqdm(
            total=len(plan),
            initial=self.stats.resumed,
            desc="synth",
            unit="prompt",
            dynamic_ncols=True,
            disable=None if self.settings.show_progress else True,
        ) as progress:
            try:
                async with asyncio.TaskGroup() as group:
                    for request in pending:
                        group.create_task(self._handle(request, progress))
            except ExceptionGroup as failures:
                fatal = [exc for exc in failures.exceptions if isinstance(exc, GeneratorFatalError)]
                if fatal:
                    raise fatal[0] from None
                raise
            finally:
                self.stats.seconds = time.perf_counter() - started
        return self.stats

    def _finished(self, request: GenerationRequest) -> bool:
        record = self.work.generated.get(request.key)
        if record is None:
            return False
        return not (
            self.settings.reflect and record["status"] == OK and request.key not in self.work.reflected
        )

    def _needs_reflection(self, request: GenerationRequest, record: dict[str, Any]) -> bool:
        return self.settings.reflect and record["status"] == OK and request.key not in self.work.reflected

    async def _handle(self, request: GenerationRequest, progress: tqdm) -> None:
        """Generate and reflect one request, holding one of the `concurrency` slots throughout."""
        async with self._semaphore:
            record = self.work.generated.get(request.key) or await self._generate(request)
            if record is not None and self._needs_reflection(request, record):
                await self._reflect(request, record)
        if record is not None and record["status"] == OK:
            self.stats.ok += 1
        else:
            self.stats.failed += 1
        progress.set_postfix(ok=self.stats.ok, failed=self.stats.failed, refresh=False)
        progress.update(1)

    async def _call(self, messages: list[Message], temperature: float, seed: int) -> Completion:
        """One generator call, after the rate limiter lets it go."""
        await self.limiter.acquire()
        return await self.generator.complete(
            messages, max_tokens=self.settings.max_tokens, temperature=temperature, seed=seed
        )

    async def _generate(self, request: GenerationRequest) -> dict[str, Any] | None:
        """Generate one prompt and record it (or its failure reason); None on a generator error."""
        target = request.target
        messages = generation_messages(request.policy, request.label, target, request.index)
        started = time.perf_counter()
        self.stats.generation_sent += 1
        try:
            completion = await self._call(
                messages, self.settings.temperature, request.seed(self.settings.seed)
            )
        except GeneratorRequestError as exc:
            self.stats.generation_errors += 1
            log.warning("generation %s failed: %s", request.key, exc)
            return None
        self.stats.add_usage(completion)
        parsed = parse_generated(completion.text, request.policy, self.settings.limits)
        record: dict[str, Any] = {
            "key": request.key,
            "policy": request.policy.id,
            "label": request.label,
            "index": request.index,
            "behaviour": target.behaviour,
            "style": target.style,
            "generator": self.generator.name,
            **_usage(completion, time.perf_counter() - started),
        }
        if isinstance(parsed, ParseFailure):
            record |= {
                "status": FAILED,
                "reason": parsed.reason.value,
                "detail": parsed.detail,
                "output": completion.text,
            }
            log.debug("generation %s: %s (%s)", request.key, parsed.reason.value, parsed.detail)
        else:
            record |= {
                "status": OK,
                "text": parsed.text,
                "rationale": parsed.rationale,
                "repaired": parsed.repaired,
            }
        self.work.generated.append(record)
        return record

    async def _reflect(self, request: GenerationRequest, generated: dict[str, Any]) -> None:
        """Ask the generator to judge an accepted prompt and record its judgement."""
        messages = reflection_messages(request.policy, generated["text"])
        started = time.perf_counter()
        self.stats.reflection_sent += 1
        try:
            completion = await self._call(
                messages, self.settings.reflection_temperature, request.seed(self.settings.seed) + 1
            )
        except GeneratorRequestError as exc:
            self.stats.reflection_errors += 1
            log.warning("reflection %s failed: %s", request.key, exc)
            return
        self.stats.add_usage(completion)
        judgement = parse_judgement(completion.text)
        record: dict[str, Any] = {
            "key": request.key,
            "generator": self.generator.name,
            **_usage(completion, time.perf_counter() - started),
        }
        if isinstance(judgement, ParseFailure):
            record |= {
                "status": UNPARSED,
                "reason": judgement.reason.value,
                "detail": judgement.detail,
                "output": completion.text,
            }
        else:
            status = AGREED if judgement.label == request.label else DISAGREED
            record |= {
                "status": status,
                "label": LABEL_WORDS[judgement.label],
                "rationale": judgement.rationale,
                "repaired": judgement.repaired,
            }
        self.work.reflected.append(record)


def _usage(completion: Completion, seconds: float) -> dict[str, Any]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "tokens_estimated": completion.estimated,
        "seconds": round(seconds, 3),
    }
