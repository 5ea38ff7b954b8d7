"""Worker throughput as the number of GuardFormer policies grows, next to the model alone.

    python -m loadtest.bench_policies GUARDFORMER_DIR [--counts 1 2 4 8] [--n 240]
        [--out loadtest/results/bench-policies.json]

For each count k, a registry of the first k policies (the starter set, then the training-only
policies of models/train/gip_policies.yaml) is written to a temporary directory; the model
alone (GuardFormer over those k policies, tokenize + ONNX Runtime, batches of 64) scores --n
prompts, then one worker serving the GuardFormer with that registry answers --n fresh prompts
through the real Kafka and Redis (see `loadtest.bench_worker` for how verdicts/s and the model's
busy share are measured). Every prompt costs one model row per policy, so both rates fall with
k; their ratio is what the pipeline keeps. For k > 1 the worker then answers --n prompts that
each name one policy (`"policies": [...]`): only those rows are run. Needs Kafka and Redis
running (deploy/local/services.sh start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from loadtest.bench_run import model_seconds, timed_run
from loadtest.bench_worker import bench_model, make_texts
from loadtest.demo import REPO_ROOT, start_worker, wait_ready
from loadtest.kafka_client import prompt
from models.policies import DEFAULT_POLICY_DIR, PolicyDefinition, load_policies
from worker.config import load_settings

GIP_POLICY_FILE = REPO_ROOT / "models" / "train" / "gip_policies.yaml"


def first_policies(count: int) -> list[PolicyDefinition]:
    policies = list(load_policies(DEFAULT_POLICY_DIR)) + list(load_policies(GIP_POLICY_FILE))
    if count > len(policies):
        raise ValueError(f"only {len(policies)} policies to choose from")
    return policies[:count]


def write_registry(policies: list[PolicyDefinition], directory: Path) -> Path:
    path = directory / "policies.yaml"
    entries = [
        {
            "id": p.id,
            "version": p.version,
            "name": p.name,
            "description": p.description,
            "threshold": p.threshold,
        }
        for p in policies
    ]
    path.write_text(yaml.safe_dump({"policies": entries}, sort_keys=False), encoding="utf-8")
    return path


def run_count(guardformer: Path, count: int, n: int, web_port: int, scratch: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:6]
    registry = write_registry(first_policies(count), scratch)
    settings = load_settings(
        {
            "kafka": {
                "input_topic": f"benchp-{run_id}.prompts",
                "verdicts_topic": f"benchp-{run_id}.verdicts",
                "dlq_topic": f"benchp-{run_id}.dlq",
                "group_id": f"benchp-{run_id}",
            },
            "model": {"path": guardformer},
            "policies": {"path": registry},
            "web": {"port": web_port},
        }
    )
    texts = make_texts(n, seed=count, tag=run_id)
    alone = bench_model(settings, texts)
    worker = start_worker(settings, REPO_ROOT / ".local" / f"bench-policies-{count}.log")

    def busy() -> float:
        return model_seconds(settings)

    try:
        wait_ready(settings, worker, 180)
        fresh = make_texts(n, seed=100 + count, tag=run_id)
        values = {f"p{count}-{i}": prompt(f"p{count}-{i}", t) for i, t in enumerate(fresh)}
        run = asyncio.run(timed_run(settings, values, 900, busy))
        one = None
        if count > 1:  # every request names the first policy alone: the model runs one row each
            first_id = first_policies(1)[0].id
            fresh = make_texts(n, seed=200 + count, tag=run_id)
            values = {
                f"q{count}-{i}": prompt(f"q{count}-{i}", t, policies=[first_id]) for i, t in enumerate(fresh)
            }
            one = asyncio.run(timed_run(settings, values, 900, busy))
    finally:
        worker.terminate()
        worker.wait(60)
    row = {
        "policies": count,
        "model_prompts_per_s": round(alone, 2),
        "worker_verdicts_per_s": round(run.verdicts_per_s, 2),
        "worker_over_model": round(run.verdicts_per_s / alone, 3),
        "worker_model_busy": round(run.model_busy or 0.0, 3),
        "worker_verdicts_per_s_asking_one_policy": round(one.verdicts_per_s, 2) if one else None,
    }
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("guardformer", type=Path, help="GuardFormer model directory")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8], help="policy counts [1 2 4 8]")
    parser.add_argument("--n", type=int, default=240, help="prompts per run [240]")
    parser.add_argument("--web-port", type=int, default=8098, help="worker health port [8098]")
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/bench-policies.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run_count(args.guardformer, k, args.n, args.web_port, Path(scratch)) for k in args.counts]
    result = {
        "command": "python -m loadtest.bench_policies " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": str(args.guardformer),
        "n": args.n,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
