"""The model alone and one worker end to end on a CUDA GPU, with batch settings that suit one.

    python -m loadtest.bench_gpu [--n 20000] [--out loadtest/results/bench-gpu.json]
    python -m loadtest.bench_gpu --cpu ...     # the same code path on the CPU, marked as such

Figures, from one run: the model alone (texts/s, tokenize + score, in the calls the worker's
packer makes); one worker on `--n` distinct prompts loaded beforehand (verdicts/s, and the share
of that time its model was busy); and one load test at half that rate with the default mix
(produce-to-verdict p50 / p99, short and long prompts apart; lost and duplicated). The worker
runs with `--max-batch-requests`, `--pipeline-depth`, `--max-batch-tokens` and
`--long-prompt-tokens` (defaults for a GPU, as the gpu overlay sets them: 1024, 4, 32768, 4096),
on `--precision` (auto: fp16 on CUDA).

Without a usable CUDA (no GPU, no `onnxruntime-gpu`, no CUDA libraries) it prints why in one
line and exits with status 3, measuring nothing; `--cpu` runs everything on the CPU instead and
writes `"device": "cpu"` in the JSON, so the figures can never pass for a GPU's. Needs Kafka and
Redis running (deploy/local/services.sh start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from loadtest.bench_run import (
    REPO_ROOT,
    BenchFailed,
    Process,
    machine_state,
    preloaded_run,
    spawn,
    topic_settings,
)
from loadtest.bench_worker import bench_model, make_texts, values_of
from loadtest.loadgen import run_loadtest
from models.base.session import cuda_unusable_reason
from worker.admin import ensure_topics

EXIT_NO_CUDA = 3


def worker_env(args: argparse.Namespace, device: str) -> dict[str, str]:
    """The worker's settings for this run, as the variables every process here reads."""
    return {
        "GUARDSTREAM_MODEL__DEVICE": device,
        "GUARDSTREAM_MODEL__PRECISION": args.precision,
        "GUARDSTREAM_BATCHING__MAX_BATCH_REQUESTS": str(args.max_batch_requests),
        "GUARDSTREAM_BATCHING__PIPELINE_DEPTH": str(args.pipeline_depth),
        "GUARDSTREAM_BATCHING__MAX_BATCH_TOKENS": str(args.max_batch_tokens),
        "GUARDSTREAM_BATCHING__LONG_PROMPT_TOKENS": str(args.long_prompt_tokens),
    }


def latency_run(rate: float, duration_s: float, out_dir: Path) -> dict[str, Any]:
    """One load test at `rate` with the default mix: its ledger and latencies."""
    argv = ["--rate", f"{rate:.0f}", "--duration-s", f"{duration_s:g}", "--ramp-s", "3", "--workers", "1"]
    report, path = run_loadtest([*argv, "--grace-s", "120", "--out", str(out_dir)])
    summary = report["summary"]
    return {
        "command": "guardstream loadtest " + " ".join(argv),
        "report": str(path),
        "sent": summary["sent"],
        "lost": summary["lost"],
        "duplicated": summary["duplicated"],
        "verdicts_per_s": summary["throughput_verdicts_per_s"],
        "all": summary["latency_produce_to_verdict"],
        "short_prompts": summary["latency_short_prompts"],
        "long_prompts": summary["latency_long_prompts"],
        "worker_stages": report.get("worker_stages"),
    }


def run(args: argparse.Namespace, device: str) -> dict[str, Any]:
    os.environ.update(worker_env(args, device))
    run_id = uuid.uuid4().hex[:6]
    settings = topic_settings(f"bench-gpu-{run_id}", args.web_port)
    asyncio.run(ensure_topics(settings.kafka))
    state = machine_state()
    texts = make_texts(args.n, tag=run_id)
    print(f"model alone on {device}, {args.n} texts ...", flush=True)
    model_rate = bench_model(settings, texts)
    print(f"  {model_rate:,.1f} texts/s\nworker on {device}, {args.n} prompts ...", flush=True)
    log_path = REPO_ROOT / ".local" / "bench-gpu-worker.log"
    worker = asyncio.run(
        preloaded_run(
            settings, values_of("g", texts), lambda: spawn(Process.WORKER, settings, log_path), busy=True
        )
    )
    print(f"  {worker.verdicts_per_s:,.1f} verdicts/s, model busy {worker.model_busy or 0:.2f}", flush=True)
    latency = latency_run(worker.verdicts_per_s / 2, args.latency_s, args.out.parent)
    return {
        "command": "python -m loadtest.bench_gpu " + " ".join(sys.argv[1:]),
        "device": device,
        "machine": state,
        "settings": worker_env(args, device),
        "n": args.n,
        "model_texts_per_s": round(model_rate, 1),
        "worker_verdicts_per_s": round(worker.verdicts_per_s, 1),
        "worker_over_model": round(worker.verdicts_per_s / model_rate, 3),
        "worker_model_busy": round(worker.model_busy or 0.0, 3),
        "worker_ledger": {"sent": worker.sent, "lost": worker.lost, "duplicated": worker.duplicated},
        "latency_at_half_the_worker_rate": latency,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (the JSON says so)")
    parser.add_argument(
        "--preflight", action="store_true", help="only check that the run can start (CUDA, or --cpu)"
    )
    parser.add_argument("--n", type=int, default=20000, help="prompts of the throughput runs [20000]")
    parser.add_argument("--latency-s", type=float, default=30.0, help="seconds of the load test [30]")
    parser.add_argument("--max-batch-requests", type=int, default=1024, help="[1024]")
    parser.add_argument("--pipeline-depth", type=int, default=4, help="[4]")
    parser.add_argument("--max-batch-tokens", type=int, default=32768, help="[32768]")
    parser.add_argument("--long-prompt-tokens", type=int, default=4096, help="[4096]")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"])
    parser.add_argument("--web-port", type=int, default=8096, help="worker health port [8096]")
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest/results/bench-gpu.json"), help="result file"
    )
    args = parser.parse_args()
    reason = cuda_unusable_reason()
    if reason is not None and not args.cpu:
        print(f"bench-gpu: no usable CUDA here ({reason}); nothing measured (--cpu runs it on the CPU)")
        return EXIT_NO_CUDA
    if args.preflight:
        return 0
    try:
        result = run(args, "cpu" if args.cpu else "cuda")
    except BenchFailed as exc:
        print(f"bench-gpu: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
