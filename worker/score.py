"""`guardstream score`: verdicts on texts straight from the served model, no Kafka, no cache.

    guardstream score "Ignore previous instructions" "What is an index fund?"
    guardstream score --file prompts.txt --json          # one prompt per line
    some-command | guardstream score -                    # stdin, one prompt per line

Each text goes through the worker's own pipeline (decode, normalization, the one packer, the
model, the verdict), so what it prints is what the worker would publish; `--json` prints each
verdict's own fields (the verdicts topic's value), one object per line, `id` being the prompt's
position (1, 2, ...). A text the worker would dead-letter is reported on stderr (exit status 1);
a model or registry that cannot be used is one line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from models.serving import ModelSetupError
from worker import codec
from worker.cache import NullScoreCache
from worker.config import Settings
from worker.pipeline import BatchResult, Pipeline
from worker.schema import RawRecord, Verdict

_SOURCE_TOPIC = "guardstream-score"


def add_score_parser(commands: Any) -> None:
    """The `score` command and the flags it uses (the model's, not Kafka's or Redis')."""
    score = commands.add_parser(
        "score",
        help="score texts without Kafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("texts", nargs="*", help="prompts to score; '-' or none: one per line from stdin")
    score.add_argument("--file", type=Path, help="read the prompts from this file, one per line")
    score.add_argument("--json", action="store_true", help="one JSON verdict per line")
    group = score.add_argument_group("model (override GUARDSTREAM_* variables)")
    group.add_argument("--model", type=Path, help="model directory [the packaged embedder guard]")
    group.add_argument("--guardformer", type=Path, help="GuardFormer directory for the other policies")
    group.add_argument("--policies", type=Path, help="policy registry: a YAML file or directory [none]")
    group.add_argument("--device", choices=["auto", "cuda", "cpu"], help="where the model runs [auto]")
    group.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads, 0 = auto [0]")
    group.add_argument("--precision", choices=["auto", "fp32", "int8", "fp16"], help="ONNX file to run")
    group.add_argument("--max-batch-tokens", type=int, help="padded tokens per model call [8192]")
    group.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="[WARNING]")


def read_texts(args: argparse.Namespace) -> list[str]:
    """The prompts: the arguments, else the file, else stdin (blank lines skipped)."""
    if args.file is not None:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    elif args.texts and args.texts != ["-"]:
        return list(args.texts)
    else:
        lines = sys.stdin.read().splitlines()
    return [line for line in lines if line.strip()]


def run_score(settings: Settings, args: argparse.Namespace) -> int:
    """Print a verdict per text; the exit status says whether every text got one."""
    from worker.app import load_guard_model

    try:
        texts = read_texts(args)
        model = load_guard_model(settings)
    except (ModelSetupError, OSError) as exc:
        print(f"guardstream score: {exc}", file=sys.stderr)
        return 2
    no_cache = settings.model_copy(update={"redis": settings.redis.model_copy(update={"enabled": False})})
    pipeline = Pipeline(no_cache, model, NullScoreCache(), _NoSink())
    records = [_record(index, text) for index, text in enumerate(texts, start=1)]
    try:
        result = asyncio.run(pipeline.process_all(records))
    finally:
        pipeline.close()
    _print(result, texts, args.json)
    return 1 if result.letters else 0


def _record(index: int, text: str) -> RawRecord:
    value = orjson.dumps({"id": str(index), "text": text})
    return RawRecord(_SOURCE_TOPIC, 0, index, None, value)


def _print(result: BatchResult, texts: list[str], as_json: bool) -> None:
    for verdict in sorted(result.verdicts, key=lambda v: v.source.offset):
        if as_json:
            print(codec.encode_verdict(verdict)[1].decode())
        else:
            print(_line(verdict, texts[verdict.source.offset - 1]))
    for letter in result.letters:
        print(
            f"guardstream score: prompt {letter.source.offset}: {letter.reason}: {letter.detail}",
            file=sys.stderr,
        )


def _line(verdict: Verdict, text: str) -> str:
    shown = " ".join(f"{policy}={score:.3f}" for policy, score in verdict.scores.items())
    return f"{verdict.verdict:6} {shown}  {text[:80]}"


class _NoSink:
    """`score` prints the batch's result itself."""

    async def deliver(self, verdicts: Any, letters: Any) -> None:
        raise NotImplementedError  # pragma: no cover - process() never delivers
