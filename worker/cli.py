"""The `guardstream` command.

    guardstream worker   run a worker (one member of the consumer group)
    guardstream demo     start Kafka + Redis + a worker, stream sample prompts, print verdicts
    guardstream score    score texts with the model, no Kafka (a quick check of a model)
    guardstream train    train a guard model and write a model directory (training extra)
    guardstream eval     measure model directories on labeled prompts (training extra)
    guardstream export   write ONNX fp32 / int8 / fp16 files checked against torch (training extra)
    guardstream merge    merge GuardFormer directories, searching the coefficients (training extra)
    guardstream loadtest open-loop load test through Kafka: throughput, latency, lost/duplicated records
                         (loadtest extra)
    guardstream synth    synthetic guardrail data from a policy with a generator LLM (synth extra)

Settings come from GUARDSTREAM_* environment variables; flags win over them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.score import add_score_parser

#: Offline tools: command -> (module with `main(argv) -> int`, the extra it needs, help). They
#: have their own parsers and are imported only when run: the worker imports no tool.
_TOOLS: dict[str, tuple[str, str, str]] = {
    "train": ("models.train.train_head", "train", "train a guard model, write a model directory"),
    "eval": ("models.eval.cli", "train", "measure model directories on labeled prompts"),
    "export": ("models.export.cli", "train", "export ONNX fp32 / int8 / fp16, each checked against torch"),
    "merge": (
        "models.merge.cli",
        "train",
        "merge GuardFormer directories, coefficients searched on validation F1",
    ),
    "loadtest": (
        "loadtest.loadgen",
        "loadtest",
        "open-loop load test of workers through Kafka: latency, loss",
    ),
    "synth": (
        "models.synth.cli",
        "synth",
        "synthetic prompts for a policy from a generator LLM, self-reflected",
    ),
}

#: flag -> (settings section, field)
_FLAGS: dict[str, tuple[str, str]] = {
    "bootstrap_servers": ("kafka", "bootstrap_servers"),
    "input_topic": ("kafka", "input_topic"),
    "verdicts_topic": ("kafka", "verdicts_topic"),
    "dlq_topic": ("kafka", "dlq_topic"),
    "group_id": ("kafka", "group_id"),
    "partitions": ("kafka", "partitions"),
    "redis_url": ("redis", "url"),
    "cache_ttl_s": ("redis", "ttl_s"),
    "max_batch_requests": ("batching", "max_batch_requests"),
    "max_batch_tokens": ("batching", "max_batch_tokens"),
    "max_wait_ms": ("batching", "max_wait_ms"),
    "pipeline_depth": ("batching", "pipeline_depth"),
    "long_prompt_tokens": ("batching", "long_prompt_tokens"),
    "model": ("model", "path"),
    "guardformer": ("model", "guardformer_path"),
    "policies": ("policies", "path"),
    "device": ("model", "device"),
    "threads": ("model", "intra_op_threads"),
    "precision": ("model", "precision"),
    "web_host": ("web", "host"),
    "web_port": ("web", "port"),
}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override GUARDSTREAM_* variables)")
    group.add_argument("--bootstrap-servers", help="Kafka bootstrap servers [127.0.0.1:9092]")
    group.add_argument("--input-topic", help="topic of prompts [prompts]")
    group.add_argument("--verdicts-topic", help="topic of verdicts [verdicts]")
    group.add_argument("--dlq-topic", help="dead-letter topic [prompts.dlq]")
    group.add_argument("--group-id", help="consumer group id [guardstream]")
    group.add_argument("--partitions", type=int, help="partitions of topics created at start [6]")
    group.add_argument("--redis-url", help="Redis URL [redis://127.0.0.1:6379/0]")
    group.add_argument("--no-cache", action="store_true", help="do not use Redis")
    group.add_argument("--cache-ttl-s", type=int, help="lifetime of cached scores [86400]")
    group.add_argument("--max-batch-requests", type=int, help="records per batch [64]")
    group.add_argument("--max-batch-tokens", type=int, help="padded tokens per model call [8192]")
    group.add_argument("--max-wait-ms", type=int, help="longest wait for a batch to fill [20]")
    group.add_argument("--pipeline-depth", type=int, help="batches in flight at once [2]")
    group.add_argument(
        "--long-prompt-tokens", type=int, help="costlier prompts go to the long lane, in calls this big [512]"
    )
    group.add_argument("--model", type=Path, help="model directory [the packaged embedder guard]")
    group.add_argument(
        "--guardformer",
        type=Path,
        help="GuardFormer model directory for the policies the model does not know",
    )
    group.add_argument("--policies", type=Path, help="policy registry: a YAML file or directory [none]")
    group.add_argument("--device", choices=["auto", "cuda", "cpu"], help="where the model runs [auto]")
    group.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads, 0 = auto [0]")
    group.add_argument(
        "--precision", choices=["auto", "fp32", "int8", "fp16"], help="exported ONNX file to run [auto]"
    )
    group.add_argument("--web-host", help="bind address of /health and /metrics [127.0.0.1]")
    group.add_argument("--web-port", type=int, help="port of /health and /metrics [8080]")
    group.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="[INFO]")


def settings_from_args(args: argparse.Namespace) -> Any:
    """The frozen settings: environment, then the flags that were given."""
    from worker.config import load_settings

    overrides: dict[str, Any] = {}
    for flag, (section, name) in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    if getattr(args, "no_cache", False):
        overrides.setdefault("redis", {})["enabled"] = False
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    return load_settings(overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardstream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = commands.add_parser(
        "worker", help="run a worker", description="Consume prompts, publish verdicts."
    )
    _add_settings_flags(worker)
    demo = commands.add_parser(
        "demo",
        help="stream sample prompts end to end",
        description="Start the local Kafka and Redis "
        "(deploy/local/services.sh), a worker, send sample prompts twice, print the verdicts.",
    )
    demo.add_argument("--no-services", action="store_true", help="use Kafka and Redis already running")
    demo.add_argument("--timeout-s", type=float, default=120.0, help="give up waiting after this long [120]")
    _add_settings_flags(demo)
    add_score_parser(commands)
    for name, (_, _, help_text) in _TOOLS.items():
        commands.add_parser(name, help=help_text, description=f"{help_text}; see guardstream {name} --help")
    return parser


def run_tool(name: str, argv: Sequence[str]) -> int:
    """Run a tool's own command line, with a clear message when its extra is missing."""
    import importlib

    module_name, extra, _ = _TOOLS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"guardstream {name}: needs {exc.name}, which is not installed: "
            f"pip install 'guardstream[{extra}]' (or make install)",
            file=sys.stderr,
        )
        return 2
    status: int = module.main(list(argv))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in _TOOLS:
        return run_tool(arguments[0], arguments[1:])
    args = build_parser().parse_args(arguments)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"guardstream: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    quiet = args.command == "score" and not getattr(args, "log_level", None)  # its output is the verdicts
    logging.basicConfig(
        level="WARNING" if quiet else settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "worker":
        from worker.app import run_worker

        run_worker(settings)
    if args.command == "demo":
        import importlib

        try:
            demo: Any = importlib.import_module("loadtest.demo")  # a tool: never imported by the worker
        except ModuleNotFoundError as exc:
            print(f"guardstream demo: needs {exc.name}, which is not installed here", file=sys.stderr)
            return 2
        status: int = demo.run_demo(settings, start_services=not args.no_services, timeout_s=args.timeout_s)
        return status
    if args.command == "score":
        from worker.score import run_score

        return run_score(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
