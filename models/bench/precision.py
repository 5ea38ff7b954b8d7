r"""Speed of one guard in torch fp32 and in ONNX Runtime fp32, int8 and fp16, side by side.

    python -m models.bench.precision MODEL_DIR [--batch-sizes 1 8 32 128] [--n 1024] \
        [--data-dir ../shared/data] [--out models/results/bench-precision.json]

MODEL_DIR is a trained directory (encoder + head, as `guardstream train` writes it); the ONNX
files are built from it as `guardstream export` builds them. Every runtime scores the same
prompts in the same padded batches (the first window of each prompt, as most prompts have one)
with the same number of threads, after a warm-up batch. Per runtime and batch size: texts/s and
p50 / p99 latency per batch, and the ratio of texts/s to torch fp32 measured in the same run.
Prompts come from the shared datasets when `--data-dir` exists, else from a built-in list.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.base import bert_onnx
from models.base.contract import FloatArray, IdArray
from models.base.directory import PRECISIONS, TOKENIZER_FILE
from models.base.session import create_session
from models.base.windows import WindowTokenizer, pad_windows
from models.export.checks import VERIFY_TEXTS, convert
from models.export.embedder import source_parts

Runner = Callable[[IdArray, IdArray], FloatArray]
DATA_FILES = ("slabs_pi.jsonl", "toxigen.jsonl", "neuralchemy_pi.jsonl", "advbench.jsonl")


def sample_texts(data_dir: Path | None, n: int, seed: int = 0) -> list[str]:
    """`n` prompts: a seeded sample of the shared datasets, or the export check's prompts repeated."""
    pool: list[str] = []
    if data_dir is not None and data_dir.is_dir():
        for name in DATA_FILES:
            path = data_dir / name
            if path.is_file():
                pool += [
                    json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line
                ]
    if not pool:
        pool = list(VERIFY_TEXTS)
    rng = random.Random(seed)  # noqa: S311 (a benchmark sample, not a secret)
    return [rng.choice(pool) for _ in range(n)]


def torch_runner(encoder_dir: Path, head_file: Path, threads: int) -> Runner:
    import torch

    from models.base.mlp_head import MlpHead
    from models.train.torch_encoder import SentenceEncoder

    torch.set_num_threads(threads)
    encoder = SentenceEncoder.from_dir(encoder_dir).eval()
    head = MlpHead.load(head_file)

    def run(ids: IdArray, mask: IdArray) -> FloatArray:
        with torch.no_grad():
            return head.predict(encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())

    return run


def onnx_runner(path: Path, threads: int) -> Runner:
    session, _ = create_session(path, "cpu", threads)

    def run(ids: IdArray, mask: IdArray) -> FloatArray:
        scores: FloatArray = session.run(["scores"], {"input_ids": ids, "attention_mask": mask})[0]
        return scores

    return run


def measure(run: Runner, batches: Sequence[tuple[IdArray, IdArray]]) -> dict[str, float]:
    run(*batches[0])  # warm-up
    timings = []
    for ids, mask in batches:
        started = time.perf_counter()
        run(ids, mask)
        timings.append(time.perf_counter() - started)
    texts = sum(len(ids) for ids, _ in batches)
    return {
        "texts_per_s": texts / sum(timings),
        "p50_ms": float(np.percentile(timings, 50) * 1000),
        "p99_ms": float(np.percentile(timings, 99) * 1000),
        "batches": len(batches),
    }


def build_runners(model_dir: Path, work: Path, threads: int, precisions: Sequence[str]) -> dict[str, Runner]:
    config, encoder, head = source_parts(model_dir)
    assert config.encoder is not None and config.head_file is not None  # noqa: S101 (source_parts checks)
    fp32 = work / "model.fp32.onnx"
    import onnx

    onnx.save(bert_onnx.build_model(encoder, head, config.encoder.sha256), str(fp32))
    runners = {"torch fp32": torch_runner(encoder, model_dir / config.head_file, threads)}
    for precision in precisions:
        target = work / f"model.{precision}.onnx"
        if precision != "fp32":
            convert(fp32, precision, target)
        runners[f"onnx {precision}"] = onnx_runner(target, threads)
    return runners


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    config, encoder, _ = source_parts(args.model)
    tokenizer = WindowTokenizer(encoder / TOKENIZER_FILE, config.max_length, config.window_stride)
    windows = [item.windows[0] for item in tokenizer.encode(sample_texts(args.data_dir, args.n))]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        runners = build_runners(args.model, Path(work), args.threads, args.precisions)
        for batch_size in args.batch_sizes:
            order = sorted(range(len(windows)), key=lambda i: len(windows[i]))  # length-sorted, as served
            batches = [
                pad_windows([windows[i] for i in order[start : start + batch_size]])
                for start in range(0, len(order), batch_size)
            ]
            row = {}
            for name, run in runners.items():
                print(f"batch {batch_size:>4}: {name} ...", flush=True)
                row[name] = measure(run, batches)
            base = row["torch fp32"]["texts_per_s"]
            for figures in row.values():
                figures["ratio_to_torch_fp32"] = figures["texts_per_s"] / base
            results[str(batch_size)] = row
    return {
        "command": "python -m models.bench.precision " + " ".join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
        },
        "prompts": args.n,
        "mean_tokens": float(np.mean([len(w) for w in windows])),
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'batch':>5} {'runtime':<11} {'texts/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'vs torch':>9}"]
    for batch_size, row in report["results"].items():
        for name, f in row.items():
            lines.append(
                f"{batch_size:>5} {name:<11} {f['texts_per_s']:>9.1f} {f['p50_ms']:>9.1f} "
                f"{f['p99_ms']:>9.1f} {f['ratio_to_torch_fp32']:>8.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="trained model directory (encoder + head)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128], help="[1 8 32 128]")
    parser.add_argument("--n", type=int, default=1024, help="prompts per batch size [1024]")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=PRECISIONS)
    parser.add_argument("--threads", type=int, default=2, help="threads of every runtime [2]")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="[../shared/data]")
    parser.add_argument("--out", type=Path, default=Path("models/results/bench-precision.json"))
    args = parser.parse_args(argv)
    report = run_bench(args)
    print(format_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
