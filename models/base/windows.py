"""Tokenization into overlapping windows and padding of windows into model inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.base.contract import Encoded, IdArray


def window_starts(n_tokens: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` tokens, `stride` apart, covering `n_tokens` tokens."""
    if n_tokens <= size:
        return [0]
    starts = list(range(0, n_tokens - size, stride))
    starts.append(n_tokens - size)  # the last window ends at the last token
    return starts


def split_windows(
    content: IdArray, max_length: int, stride: int, cls_id: int, sep_id: int
) -> tuple[IdArray, ...]:
    """`[CLS] chunk [SEP]` windows of at most `max_length` ids over the content ids."""
    size = max_length - 2
    return tuple(
        np.concatenate(([cls_id], content[start : start + size], [sep_id])).astype(np.int64)
        for start in window_starts(len(content), size, stride)
    )


def pad_windows(windows: Sequence[IdArray], pad_id: int = 0) -> tuple[IdArray, IdArray]:
    """`input_ids` and `attention_mask` [n, longest], right-padded."""
    longest = max(len(w) for w in windows)
    ids = np.full((len(windows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(windows), longest), dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = window
        mask[row, : len(window)] = 1
    return ids, mask


def raw_tokenizer(tokenizer_file: Path) -> Tokenizer:
    """The `tokenizer.json` tokenizer with its own padding and truncation turned off."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


#: (start, end, padding) tokens of the vocabularies the encoders use, tried in order: BERT
#: WordPiece, then SentencePiece as XLM-R names them (multilingual-e5).
SPECIAL_TOKENS = (("[CLS]", "[SEP]", "[PAD]"), ("<s>", "</s>", "<pad>"))


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a special token such as [CLS]; a clear error when the vocabulary lacks it."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"tokenizer has no {token} token")
    return int(token_id)


def window_special_ids(tokenizer: Tokenizer) -> tuple[int, int, int]:
    """Ids of the start, end and padding tokens: `[CLS] [SEP] [PAD]`, else `<s> </s> <pad>`."""
    for start, end, padding in SPECIAL_TOKENS:
        ids = tokenizer.token_to_id(start), tokenizer.token_to_id(end), tokenizer.token_to_id(padding)
        if ids[0] is not None and ids[1] is not None and ids[2] is not None:
            return ids[0], ids[1], ids[2]
    raise ValueError("tokenizer has neither [CLS] [SEP] [PAD] nor <s> </s> <pad> tokens")


class WindowTokenizer:
    """A `tokenizer.json` tokenizer (BERT WordPiece, or SentencePiece with `<s>` and `</s>`) that
    splits long texts into windows.

    Each window holds at most `max_length` ids including `[CLS]` and `[SEP]` (or `<s>`, `</s>`);
    consecutive windows start `stride` content tokens apart, so they overlap by
    `max_length - 2 - stride` tokens.
    """

    def __init__(self, tokenizer_file: Path, max_length: int, stride: int) -> None:
        if max_length < 3:
            raise ValueError("max_length must leave room for [CLS], [SEP] and one token")
        if not 1 <= stride <= max_length - 2:
            raise ValueError(f"stride must be in [1, {max_length - 2}], got {stride}")
        self.max_length = max_length
        self.stride = stride
        self._tokenizer = raw_tokenizer(tokenizer_file)
        self.cls_id, self.sep_id, self.pad_id = window_special_ids(self._tokenizer)

    def encode(self, texts: list[str]) -> list[Encoded]:
        """One `Encoded` (one window or more) per text."""
        # the fast path computes no character offsets (unused here): the same ids, a fifth faster
        encodings = self._tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [
            Encoded(
                split_windows(
                    np.asarray(e.ids, dtype=np.int64), self.max_length, self.stride, self.cls_id, self.sep_id
                )
            )
            for e in encodings
        ]
