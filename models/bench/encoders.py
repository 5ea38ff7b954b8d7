r"""Two frozen sentence encoders compared under one data set, one head and one held-out protocol.

    python -m models.bench.encoders --data-dir ../shared/data --mpnet-dir DIR \
        [--minilm-dir DIR] [--per-group 300] [--max-length 128] [--threads 2] \
        [--out models/results/encoder-comparison.json]

Encoders: all-MiniLM-L6-v2 (the packaged encoder, BERT) and all-mpnet-base-v2 (MPNet), each read
from a local directory (config.json, model.safetensors, tokenizer.json) with transformers
AutoModel and AutoTokenizer. A text's embedding is the mean of the last hidden states over its
attention mask, L2-normalized (the sentence-transformers pooling of both models). Texts are
truncated at `--max-length` tokens (128 by default), identically for both encoders: the served
model embeds 256-token windows and takes the maximum over windows; one truncated window per text
keeps the comparison's CPU time down. Embeddings are cached per encoder and text set in an .npz
under `--cache-dir`.

Data: the labeled prompts of `guardstream train` (`models.train.files.load_examples`), then a
seeded subsample, the same for both encoders: every `heldout` row, at most `--per-group` rows of
each (split, source group) of train and validation, and no test rows.

Head and protocol: the MLP head of `guardstream train` (`models.train.mlp.train_mlp`) on the train
rows, early-stopped on the validation rows, hand-written groups weighted by
`--handwritten-weight`; thresholds at the false-positive budget on the held-out sources and the
selection score (`models.train.evaluate.calibrate_and_report`, `models.train.protocol`); and
validation figures (AUPRC, F1 at those thresholds) per policy.

Speed: texts/s of each encoder in torch on one seeded sample of `--speed-texts` texts, in
length-sorted batches of `--batch-size`, at `--threads` threads, after one warm-up batch; the
encoders are timed alternately for `--speed-rounds` rounds and the best round of each is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import random
import shlex
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from models.base import bert_onnx
from models.base.contract import FloatArray
from models.tool_main import tool_main
from models.train import evaluate
from models.train.data import SPLITS, Example
from models.train.embed import WindowEmbeddings
from models.train.files import DataFileError, add_data_arguments, load_examples
from models.train.mlp import MlpSettings, train_mlp
from models.train.protocol import DEFAULT_FPR_BUDGET
from models.train.train_head import window_dataset

log = logging.getLogger("guardstream.bench.encoders")

#: SHA-256 of the all-mpnet-base-v2 archive the `--mpnet-dir` directory was unpacked from.
MPNET_ARCHIVE_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json")
#: Splits the subsample caps per source group (held-out rows are all kept, test rows dropped).
CAPPED_SPLITS = ("train", "validation")
CACHE_VERSION = "1"


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder to compare: a display name, its directory and where its files came from."""

    name: str
    directory: Path
    archive_sha256: str | None = None


@dataclass
class Encoder:
    """A loaded encoder: tokenizer and model in eval mode."""

    spec: EncoderSpec
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel


# --- data -----------------------------------------------------------------------------------


def subsample(examples: Sequence[Example], per_group: int, seed: int) -> list[Example]:
    """Every held-out row; at most `per_group` rows per (split, group) of train and validation.

    Rows of a capped cell are drawn with a generator seeded by `seed`, the cells visited in sorted
    order, so the same examples give the same subsample; the input order is kept.
    """
    cells: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        cells[(example.split, example.group)].append(index)
    rng = np.random.default_rng(seed)
    kept: set[int] = set()
    for (split, _group), rows in sorted(cells.items()):
        if split == "heldout":
            kept.update(rows)
        elif split in CAPPED_SPLITS:
            chosen = rows if len(rows) <= per_group else rng.choice(rows, per_group, replace=False)
            kept.update(int(row) for row in chosen)
    return [example for index, example in enumerate(examples) if index in kept]


def subsample_counts(examples: Sequence[Example]) -> dict[str, Any]:
    """Rows per split, and per split and source group."""
    counts: dict[str, Any] = {}
    for split in SPLITS:
        groups = Counter(e.group for e in examples if e.split == split)
        if groups:
            counts[split] = {"rows": sum(groups.values()), "groups": dict(sorted(groups.items()))}
    return counts


# --- encoders -------------------------------------------------------------------------------


def check_encoder_dir(directory: Path) -> None:
    """FileNotFoundError with a one-line message when `directory` is not an encoder directory."""
    if not directory.is_dir():
        raise FileNotFoundError(f"encoder directory {directory} not found")
    missing = [name for name in ENCODER_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"encoder directory {directory} has no {', '.join(missing)}")


def load_encoder(spec: EncoderSpec) -> Encoder:
    """Tokenizer and model (without pooler) from a local directory, in eval mode."""
    check_encoder_dir(spec.directory)
    verbosity = transformers_logging.get_verbosity()
    # The packaged MiniLM carries pooler weights the mean pooling does not use: noise when loading.
    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(spec.directory), local_files_only=True)
        model = AutoModel.from_pretrained(str(spec.directory), local_files_only=True, add_pooling_layer=False)
    finally:
        transformers_logging.set_verbosity(verbosity)
    return Encoder(spec, tokenizer, model.eval())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch, hidden]: the mean of `hidden` over the unmasked tokens, L2-normalized."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2.0, dim=1, eps=1e-12)


def token_ids(encoder: Encoder, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of every text with the special tokens, truncated at `max_length`."""
    encoded = encoder.tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def length_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of `ids` in batches of similar length (sorted by length, then by index)."""
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def encode_batch(encoder: Encoder, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Pooled, normalized embeddings [len(ids), hidden] of one padded batch."""
    padded = encoder.tokenizer.pad({"input_ids": [list(i) for i in ids]}, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(
            input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]
        ).last_hidden_state
        return mean_pool(hidden, padded["attention_mask"])


def embed(encoder: Encoder, texts: Sequence[str], max_length: int, batch_size: int) -> FloatArray:
    """[len(texts), hidden] float32 embeddings, in the order of `texts`."""
    ids = token_ids(encoder, texts, max_length)
    width = int(encoder.model.config.hidden_size)
    out = np.zeros((len(texts), width), dtype=np.float32)
    with tqdm(total=len(texts), desc=f"embedding ({encoder.spec.name})", unit="text") as bar:
        for batch in length_batches(ids, batch_size):
            out[batch] = encode_batch(encoder, [ids[i] for i in batch]).numpy()
            bar.update(len(batch))
    return out


def texts_sha256(texts: Sequence[str]) -> str:
    """SHA-256 over the texts in order (each length-prefixed)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def cache_path(cache_dir: Path, spec: EncoderSpec, texts: Sequence[str], max_length: int) -> Path:
    """The .npz of one encoder directory, truncation length and text list."""
    key = hashlib.sha256(
        "\0".join(
            [CACHE_VERSION, str(spec.directory.resolve()), str(max_length), texts_sha256(texts)]
        ).encode()
    ).hexdigest()[:24]
    return cache_dir / f"{spec.name}-{key}.npz"


def cached_embeddings(
    encoder: Encoder, texts: Sequence[str], max_length: int, batch_size: int, cache_dir: Path
) -> FloatArray:
    """`embed`, read from the cache when this encoder has embedded these texts before."""
    path = cache_path(cache_dir, encoder.spec, texts, max_length)
    if path.is_file():
        with np.load(path) as stored:
            vectors: FloatArray = stored["vectors"]
        log.info("%s: %d embeddings from %s", encoder.spec.name, len(vectors), path)
        return vectors
    vectors = embed(encoder, texts, max_length, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as stream:
        np.savez(stream, vectors=vectors)
    temporary.replace(path)
    return vectors


# --- size and speed -------------------------------------------------------------------------


def weight_facts(encoder: Encoder) -> dict[str, Any]:
    """Parameters in the weight file and in the loaded model, the file's size and SHA-256."""
    path = encoder.spec.directory / bert_onnx.WEIGHTS_FILE
    with safe_open(str(path), framework="pt") as weights:
        in_file = sum(int(np.prod(weights.get_slice(name).get_shape())) for name in weights.keys())  # noqa: SIM118
    return {
        "architecture": str(encoder.model.config.model_type),
        "hidden_size": int(encoder.model.config.hidden_size),
        "layers": int(encoder.model.config.num_hidden_layers),
        "params_in_file": in_file,
        "params_used": sum(p.numel() for p in encoder.model.parameters()),
        "weights_bytes": path.stat().st_size,
        "weights_sha256": bert_onnx.file_sha256(path),
    }


def time_encoder(encoder: Encoder, ids: Sequence[Sequence[int]], batch_size: int) -> float:
    """Texts/s over all batches of `ids`, after one warm-up batch."""
    batches = length_batches(ids, batch_size)
    encode_batch(encoder, [ids[i] for i in batches[0]])
    started = time.perf_counter()
    for batch in batches:
        encode_batch(encoder, [ids[i] for i in batch])
    return len(ids) / (time.perf_counter() - started)


def measure_speed(
    encoders: Sequence[Encoder], texts: Sequence[str], max_length: int, batch_size: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """Per encoder: texts/s of every round (encoders alternating) and the best round."""
    ids = {e.spec.name: token_ids(e, texts, max_length) for e in encoders}
    runs: dict[str, list[float]] = {e.spec.name: [] for e in encoders}
    for round_index in range(rounds):
        for encoder in encoders:
            runs[encoder.spec.name].append(time_encoder(encoder, ids[encoder.spec.name], batch_size))
            log.info(
                "speed round %d: %s %.1f texts/s",
                round_index + 1,
                encoder.spec.name,
                runs[encoder.spec.name][-1],
            )
    return {
        name: {
            "texts_per_s": max(values),
            "rounds": values,
            "mean_tokens": float(np.mean([len(i) for i in ids[name]])),
        }
        for name, values in runs.items()
    }


# --- head and report ------------------------------------------------------------------------


def one_window(vectors: FloatArray) -> WindowEmbeddings:
    """One window per text: row i embeds text i."""
    return WindowEmbeddings(vectors, np.arange(len(vectors), dtype=np.int64))


def head_report(
    examples: Sequence[Example],
    vectors: FloatArray,
    policies: Sequence[str],
    settings: MlpSettings,
    handwritten_weight: float,
    fpr_budget: float,
) -> dict[str, Any]:
    """Train the MLP head on one encoder's embeddings; thresholds and figures of the protocol."""
    embeddings = one_window(vectors)
    n = len(policies)
    head, history = train_mlp(
        window_dataset(examples, embeddings, "train", n, handwritten_weight),
        window_dataset(examples, embeddings, "validation", n, handwritten_weight),
        settings,
    )
    scores = evaluate.prompt_scores(head, embeddings, len(examples))
    _, report = evaluate.calibrate_and_report(examples, scores, policies, fpr_budget)
    return {
        "epochs_run": len(history),
        "best_epoch": int(np.argmin(history)) + 1,
        "best_validation_loss": float(np.min(history)),
        **{key: report[key] for key in ("thresholds", "calibration", "validation", "heldout")},
        "heldout_sources": report["heldout_sources"],
        "selection_score": report["heldout_sources"]["selection_score"],
    }


# --- command --------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags of the comparison."""
    add_data_arguments(parser)
    encoders = parser.add_argument_group("encoders")
    encoders.add_argument(
        "--mpnet-dir",
        type=Path,
        required=True,
        help="all-mpnet-base-v2 directory (config, weights, tokenizer)",
    )
    encoders.add_argument("--minilm-dir", type=Path, default=None, help="[the packaged all-MiniLM-L6-v2]")
    encoders.add_argument(
        "--mpnet-archive-sha256",
        default=MPNET_ARCHIVE_SHA256,
        help="SHA-256 of the archive --mpnet-dir came from, recorded in the output [%(default)s]",
    )
    run = parser.add_argument_group("subsample, embedding and head")
    run.add_argument("--per-group", type=int, default=300, help="most train/validation rows per source [300]")
    run.add_argument("--max-length", type=int, default=128, help="tokens per text, truncated [128]")
    run.add_argument("--batch-size", type=int, default=32, help="texts per encoder batch [32]")
    run.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    run.add_argument("--seed", type=int, default=0, help="subsample, speed sample and head [0]")
    run.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP head [128]")
    run.add_argument("--epochs", type=int, default=80, help="MLP epochs, early-stopped [80]")
    run.add_argument("--handwritten-weight", type=float, default=4.0, help="hand-written prompts' weight [4]")
    run.add_argument("--fpr-budget", type=float, default=DEFAULT_FPR_BUDGET, help="[%(default)s]")
    run.add_argument("--speed-texts", type=int, default=512, help="texts timed per encoder [512]")
    run.add_argument("--speed-rounds", type=int, default=2, help="alternating timing rounds [2]")
    run.add_argument(
        "--cache-dir", type=Path, default=Path(".local/encoder-embeddings"), help="[%(default)s]"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("models/results/encoder-comparison.json"), help="[%(default)s]"
    )


def encoder_specs(args: argparse.Namespace) -> list[EncoderSpec]:
    """MiniLM first, then MPNet; both directories checked before any data is read."""
    minilm = args.minilm_dir if args.minilm_dir is not None else bert_onnx.encoder_dir()
    specs = [
        EncoderSpec("all-MiniLM-L6-v2", Path(minilm)),
        EncoderSpec("all-mpnet-base-v2", Path(args.mpnet_dir), args.mpnet_archive_sha256),
    ]
    for spec in specs:
        check_encoder_dir(spec.directory)
    return specs


def speed_sample(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of `n` texts (all of them when fewer)."""
    rng = random.Random(seed)  # noqa: S311 (a benchmark sample, not a secret)
    return rng.sample(list(texts), min(n, len(texts)))


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "per_group", "max_length", "batch_size", "threads", "seed", "hidden", "epochs",
        "handwritten_weight", "fpr_budget", "speed_texts", "speed_rounds",
    )  # fmt: skip
    return {key: getattr(args, key) for key in keys} | {"test_split": "not used"}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """The whole comparison; returns the report written to `--out`."""
    started = time.perf_counter()
    specs = encoder_specs(args)
    torch.set_num_threads(args.threads)
    policies, examples = load_examples(args)
    chosen = subsample(examples, args.per_group, args.seed)
    log.info("%d of %d prompts kept", len(chosen), len(examples))
    texts = [e.text for e in chosen]
    encoders = [load_encoder(spec) for spec in specs]
    speed = measure_speed(
        encoders,
        speed_sample(texts, args.speed_texts, args.seed),
        args.max_length,
        args.batch_size,
        args.speed_rounds,
    )
    head_settings = MlpSettings(hidden=args.hidden, epochs=args.epochs, seed=args.seed)
    results: dict[str, Any] = {}
    for encoder in encoders:
        embed_started = time.perf_counter()
        vectors = cached_embeddings(encoder, texts, args.max_length, args.batch_size, args.cache_dir)
        embed_seconds = time.perf_counter() - embed_started
        results[encoder.spec.name] = {
            "directory": str(encoder.spec.directory),
            "archive_sha256": encoder.spec.archive_sha256,
            **weight_facts(encoder),
            "speed": speed[encoder.spec.name],
            "embedding_seconds": round(embed_seconds, 1),
            **head_report(chosen, vectors, policies, head_settings, args.handwritten_weight, args.fpr_budget),
        }
    minilm, mpnet = (speed[spec.name]["texts_per_s"] for spec in specs)
    return {
        "command": "python -m models.bench.encoders " + shlex.join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "settings": settings_of(args),
        "policies": list(policies),
        "data": {"prompts": len(examples), "kept": len(chosen), "texts_sha256": texts_sha256(texts)},
        "subsample": subsample_counts(chosen),
        "encoders": results,
        "speed_ratio_mpnet_to_minilm": mpnet / minilm,
        "seconds": round(time.perf_counter() - started, 1),
    }


def table_rows(report: dict[str, Any]) -> Iterator[str]:
    """Lines of the printed summary, one per figure, one column per encoder."""
    names = list(report["encoders"])
    results = [report["encoders"][name] for name in names]
    yield f"{'':<34}" + "".join(f"{name:>20}" for name in names)

    def row(label: str, values: Sequence[float], fmt: str) -> str:
        return f"{label:<34}" + "".join(f"{value:>20{fmt}}" for value in values)

    yield row("selection score", [r["selection_score"] for r in results], ".4f")
    for policy in report["policies"]:
        yield row(
            f"held-out recall {policy}",
            [r["heldout_sources"][policy]["macro_recall"] for r in results],
            ".4f",
        )
        yield row(
            f"held-out FPR {policy}", [r["heldout_sources"][policy]["macro_fpr"] for r in results], ".4f"
        )
        yield row(f"validation AUPRC {policy}", [r["validation"][policy]["auprc"] for r in results], ".4f")
        yield row(f"validation F1 {policy}", [r["validation"][policy]["f1"] for r in results], ".4f")
    yield row("texts/s", [r["speed"]["texts_per_s"] for r in results], ".1f")
    yield row("parameters (M)", [r["params_used"] / 1e6 for r in results], ".1f")
    yield row("weights (MB)", [r["weights_bytes"] / 1e6 for r in results], ".1f")
    yield f"speed ratio mpnet/MiniLM: {report['speed_ratio_mpnet_to_minilm']:.3f}"


def run(args: argparse.Namespace) -> int:
    """Compare, write `--out`, print the table; exit status 2 with one line for a user mistake."""
    try:
        report = compare(args)
    except (DataFileError, FileNotFoundError) as exc:
        print(f"guardstream bench-encoders: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("\n".join(table_rows(report)))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return tool_main("bench-encoders", __doc__, configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
