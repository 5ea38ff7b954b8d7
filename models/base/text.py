r"""Text normalization applied before a prompt is scored or used as a cache key.

`normalize_text` undoes the cheap tricks that hide words from a guard model but not from the
model it guards:

1. NFKC (fullwidth and mathematical letters, ligatures, compatibility spaces become plain ones);
2. invisible characters removed: zero-width characters, the soft hyphen, bidirectional controls
   and control characters other than whitespace ("ig\u200bnore" -> "ignore");
3. spaced-out letters joined: a run of at least four single letters separated by whitespace
   ("i g n o r e  a l l") is read as letters of words; the narrowest gap of the run joins
   letters, a wider gap or punctuation ends a word ("ignore all");
4. whitespace runs collapsed to one space, ends stripped;
5. Cyrillic and Greek look-alikes folded to Latin inside otherwise Latin words
   (`models.base.confusables`): "Ignore" spelled with a Cyrillic o and e becomes plain "Ignore",
   while Russian or Greek text stays as it is.

Leetspeak ("1gn0re") is left alone: digits can mean digits. The function is idempotent.
"""

from __future__ import annotations

import re
import unicodedata

from models.base.confusables import fold_confusables

#: Invisible characters that split or hide tokens: zero-width space, non-joiner, joiner, word
#: joiner, invisible operators, BOM, soft hyphen, Mongolian vowel separator, bidi controls.
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e"),
) | dict.fromkeys([*range(0x200E, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
#: Control characters (Unicode category Cc) that are not whitespace. Whitespace controls
#: (tab, newline, vertical tab, form feed, carriage return, U+001C..U+001F, U+0085) are kept.
_DROPPED_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")

#: A lone letter, possibly with punctuation stuck to it ("e," "(a"), or punctuation alone.
_LONE = r"(?:[^\s\w]*[^\W\d_][^\s\w]*|[^\s\w]+)"
#: Two or more such tokens separated by whitespace, not touching other non-space characters.
_SPACED_RUN = re.compile(rf"(?<!\S){_LONE}(?:\s+{_LONE})+(?!\S)")
_GAP = re.compile(r"(\s+)")
_LETTER = re.compile(r"[^\W\d_]")
#: Fewest lone letters in a run before it is read as spaced-out words.
MIN_SPACED_LETTERS = 4


def _join_run(match: re.Match[str]) -> str:
    """One run: remove its narrowest letter-to-letter gaps, keep every other gap.

    A gap joins only a letter with nothing after it to a letter with nothing before it, so
    punctuation ("e, a") ends a word.
    """
    parts = _GAP.split(match.group())
    tokens, gaps = parts[0::2], parts[1::2]
    if sum(1 for token in tokens if _LETTER.search(token)) < MIN_SPACED_LETTERS:
        return match.group()
    joins = [
        _LETTER.match(tokens[i + 1]) is not None and _LETTER.match(tokens[i][-1]) is not None
        for i in range(len(gaps))
    ]
    widths = [len(gap) for gap, join in zip(gaps, joins, strict=True) if join]
    if not widths:
        return match.group()
    narrowest = min(widths)
    out = [tokens[0]]
    for gap, join, token in zip(gaps, joins, tokens[1:], strict=True):
        if not (join and len(gap) == narrowest):
            out.append(gap)
        out.append(token)
    return "".join(out)


def join_spaced_letters(text: str) -> str:
    """Join spaced-out letters into words: "i g n o r e  a l l" -> "ignore  all"."""
    return _SPACED_RUN.sub(_join_run, text)


def normalize_text(text: str) -> str:
    """The normalized form of `text` (see the module docstring): what is scored and cached.

    Whitespace controls such as newline and tab survive the control-character filter, so they
    still separate words, then every whitespace run becomes a single space. Spaced-out letters
    are joined before the collapse (so a double space can end a word) and once more after it (so
    the result is a fixed point).
    """
    ascii_only = text.isascii()  # NFKC, invisible characters and look-alikes all lie outside ASCII
    if not ascii_only:
        text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = _DROPPED_CONTROLS.sub("", text)
    if _SPACED_RUN.search(text) is None:  # most texts: collapsing whitespace cannot make a run
        text = _collapse_whitespace(text)
    else:
        text = join_spaced_letters(_collapse_whitespace(join_spaced_letters(text)))
    return text if ascii_only else fold_confusables(text)


def _collapse_whitespace(text: str) -> str:
    r"""Every whitespace run as one space, none at the ends (`str.split` splits where `\s+` matches)."""
    return " ".join(text.split())
