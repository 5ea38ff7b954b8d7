r"""`guardstream export`: ready-to-serve ONNX files of a trained model, each checked against torch.

    guardstream export my-guard --out my-guard-onnx [--precision fp32 int8 fp16]

From a trained model directory (encoder + head, as `guardstream train` writes it) this builds:

- fp32: the encoder, mean pooling, L2 normalization and head as one graph (`models.base.bert_onnx`);
- int8: the fp32 graph with ONNX Runtime's dynamic quantization (int8 weights with per-channel
  scales, activations quantized on the fly): a quarter of the size, the fastest on CPUs, but the
  activation scales are computed per call, so scores move slightly with the batch (opt-in);
- fp16: the fp32 graph in half precision with float32 inputs and outputs kept: half the size,
  for GPUs, and batch-independent on CPUs too.

Before a file is written, its scores on a verification set (built-in varied prompts plus
`--verify-file`) are compared with the torch model (the encoder in torch, the head in float32):
the largest absolute difference must be within the precision's tolerance (`TOLERANCES`) and
the decisions at the model's thresholds must agree on at least 95% of the prompts. A file that
fails is not written and the command exits 1. The output directory is written aside and
renamed into place: never half a model. It holds `config.json` (with the files' SHA-256),
`tokenizer.json`, the ONNX files, `export.json` (sizes, differences, agreement, seconds) and
copies of `MODEL_CARD.md` and `metrics.json`. The worker picks fp32 (else fp16) on a CPU and
fp16 (else fp32) on a GPU; `--precision int8` opts in to int8.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from models.base import bert_onnx
from models.base.directory import CONFIG_FILE, PRECISIONS, ModelDirectoryError, read_config
from models.export.checks import VERIFY_TEXTS, ExportError, read_verify_file
from models.export.embedder import export_model
from models.tool_main import tool_main

log = logging.getLogger("guardstream.export")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="trained model directory (guardstream train --out)")
    parser.add_argument("--out", type=Path, required=True, help="exported model directory to write")
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), help="[fp32 int8 fp16]"
    )
    parser.add_argument(
        "--verify-file", type=Path, help="more verification prompts (JSONL with text, or lines)"
    )


def _is_guardformer(model_dir: Path) -> bool:
    try:
        return read_config(model_dir / CONFIG_FILE).get("kind") == "guardformer"
    except ModelDirectoryError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        extra = read_verify_file(args.verify_file)
        if _is_guardformer(args.model):
            from models.export.guardformer import export_guardformer

            precisions = (
                [p for p in args.precision if p != "int8"]
                if args.precision == list(PRECISIONS)
                else args.precision
            )
            checks = export_guardformer(args.model, args.out, precisions, [*VERIFY_TEXTS, *extra])
        else:
            checks = export_model(args.model, args.out, args.precision, extra)
    except (ModelDirectoryError, bert_onnx.EncoderIntegrityError, FileNotFoundError) as exc:
        print(f"guardstream export: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"guardstream export: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.out}: "
        + ", ".join(f"model.{c.precision}.onnx" for c in checks)
        + ", config.json, export.json"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return tool_main("export", __doc__, configure_parser, run, argv, log_level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
