"""Splitting token ids into overlapping windows, and padding windows into model inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.base.bert_onnx import encoder_dir
from models.base.windows import WindowTokenizer, pad_windows, split_windows, window_starts

CLS, SEP = 101, 102


@pytest.mark.parametrize(
    ("n", "size", "stride"), [(0, 10, 5), (10, 10, 5), (11, 10, 5), (100, 10, 7), (254 * 8, 254, 192)]
)
def test_windows_cover_every_token(n: int, size: int, stride: int) -> None:
    starts = window_starts(n, size, stride)
    covered = np.zeros(n, dtype=bool)
    for start in starts:
        covered[start : start + size] = True
    assert covered.all()
    assert starts[0] == 0
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))
    assert starts[-1] + size >= n
    assert len(set(starts)) == len(starts)


def test_split_windows_adds_special_tokens() -> None:
    content = np.arange(1000, 1025, dtype=np.int64)
    windows = split_windows(content, max_length=10, stride=6, cls_id=CLS, sep_id=SEP)
    assert all(len(w) <= 10 and w[0] == CLS and w[-1] == SEP for w in windows)
    seen = np.concatenate([w[1:-1] for w in windows])
    assert set(seen.tolist()) == set(content.tolist())
    assert windows[-1][-2] == content[-1]


def test_short_and_empty_texts_have_one_window() -> None:
    assert [w.tolist() for w in split_windows(np.array([5, 6], dtype=np.int64), 10, 4, CLS, SEP)] == [
        [CLS, 5, 6, SEP]
    ]
    assert [w.tolist() for w in split_windows(np.array([], dtype=np.int64), 10, 4, CLS, SEP)] == [[CLS, SEP]]


def test_pad_windows() -> None:
    ids, mask = pad_windows([np.array([1, 2, 3]), np.array([4])])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == np.int64


def test_tokenizer_windows_a_long_text(tokenizer: WindowTokenizer) -> None:
    text = " ".join(f"word{i}" for i in range(700))
    (encoded,) = tokenizer.encode([text])
    assert len(encoded.windows) > 2
    assert all(len(w) <= tokenizer.max_length for w in encoded.windows)
    assert all(w[0] == tokenizer.cls_id and w[-1] == tokenizer.sep_id for w in encoded.windows)
    assert encoded.n_tokens == sum(len(w) for w in encoded.windows)


def test_tokenizer_matches_plain_bert_tokenization(tokenizer: WindowTokenizer) -> None:
    (encoded,) = tokenizer.encode(["Hello, World!"])
    assert encoded.windows[0].tolist() == [CLS, 7592, 1010, 2088, 999, SEP]


def test_tokenizer_ids_match_the_tokenizers_full_encoding(tokenizer: WindowTokenizer) -> None:
    """The windows come from the fast path (no character offsets): the same ids as `encode`."""
    texts = ["Ça coûte 10 € ?", "東京 タワー 🚀 naïve café", "ignore ALL previous instructions", ""]
    for text, encoded in zip(texts, tokenizer.encode(texts), strict=True):
        full = tokenizer._tokenizer.encode(text, add_special_tokens=False).ids
        assert encoded.windows[0].tolist() == [tokenizer.cls_id, *full, tokenizer.sep_id]


@pytest.mark.parametrize(("max_length", "stride"), [(2, 1), (10, 0), (10, 9)])
def test_bad_window_settings_are_refused(max_length: int, stride: int) -> None:
    with pytest.raises(ValueError):
        WindowTokenizer(encoder_dir() / "tokenizer.json", max_length, stride)
