"""Folding of Cyrillic and Greek look-alikes of Latin letters inside otherwise Latin words.

"Ignore" spelled with a Cyrillic o and e reads as "Ignore" but tokenizes as something else, so a
guard model misses it. A word (a run of letters and digits) is folded only when it mixes scripts:
it holds at least one Latin letter, and every letter that is not Latin has a Latin look-alike
here. Real Russian or Greek words are left as they are: they hold no Latin letter (or, after a
keyboard-layout slip, letters with no look-alike, such as de, zhe or lambda). Digits are neither;
leetspeak ("1gn0re") is not folded, since a digit can mean a digit.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from confusable_homoglyphs import confusables

#: Where the look-alikes come from: Unicode's confusables data (confusables.txt, through the
#: confusable-homoglyphs package): each Cyrillic or Greek letter whose listed homoglyph is one
#: ASCII letter. Measured on models/train/obfuscated.jsonl (normalized disguised prompt == the
#: normalized plain one), that data alone recovers 78/80 homoglyph and 76/80 mixed prompts: it
#: lacks lowercase letters that read as Latin in most fonts (Cyrillic te, ka, en, em, pe, soft
#: sign; Greek kappa, chi, epsilon, tau, eta, omega) and maps the Cyrillic and Greek capital I
#: look-alikes to a lowercase l. `_ADDED` fills those in (80/80 and 80/80, as the hand-made table
#: alone did); neither folds any of 15 real Russian, Ukrainian, Bulgarian and Greek sentences.
_SCRIPTS = (*range(0x0370, 0x0400), *range(0x0400, 0x0530))  # Greek and Coptic, Cyrillic (+ supplement)
_ADDED: tuple[tuple[str, str], ...] = (
    ("CYRILLIC SMALL LETTER TE", "t"),
    ("CYRILLIC SMALL LETTER KA", "k"),
    ("CYRILLIC SMALL LETTER EN", "h"),
    ("CYRILLIC SMALL LETTER EM", "m"),
    ("CYRILLIC SMALL LETTER PE", "n"),
    ("CYRILLIC SMALL LETTER SOFT SIGN", "b"),
    ("CYRILLIC SMALL LETTER PALOCHKA", "l"),
    ("CYRILLIC CAPITAL LETTER QA", "Q"),
    ("CYRILLIC CAPITAL LETTER SHHA", "H"),
    ("CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I", "I"),
    ("CYRILLIC LETTER PALOCHKA", "I"),
    ("GREEK SMALL LETTER KAPPA", "k"),
    ("GREEK SMALL LETTER CHI", "x"),
    ("GREEK SMALL LETTER EPSILON", "e"),
    ("GREEK SMALL LETTER TAU", "t"),
    ("GREEK SMALL LETTER ETA", "n"),
    ("GREEK SMALL LETTER OMEGA", "w"),
    ("GREEK CAPITAL LETTER IOTA", "I"),
)


def _unicode_look_alikes() -> dict[str, str]:
    """Cyrillic and Greek letters whose Unicode confusable is a single ASCII letter."""
    found: dict[str, str] = {}
    for char in map(chr, _SCRIPTS):
        if not char.isalpha():
            continue
        for homoglyph in confusables.confusables_data.get(char, ()):
            latin = homoglyph["c"]
            if len(latin) == 1 and latin.isascii() and latin.isalpha():
                found[char] = latin
                break
    return found


#: Look-alike character -> Latin letter. Fullwidth and mathematical letters need no entry: NFKC
#: maps them to ASCII before folding.
CONFUSABLES: dict[str, str] = {
    **_unicode_look_alikes(),
    **{unicodedata.lookup(name): latin for name, latin in _ADDED},
}

_TABLE = str.maketrans(CONFUSABLES)
_ANY_CONFUSABLE = re.compile("[" + "".join(CONFUSABLES) + "]")
#: Letters and digits, with inner apostrophes ("someone's"): the units folding decides on.
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


@lru_cache(maxsize=4096)
def _is_latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith("LATIN ")


def _is_disguised_latin(word: str) -> bool:
    """A word with a Latin letter whose other letters are all Latin look-alikes."""
    has_latin = False
    for char in word:
        if not char.isalpha():
            continue
        if _is_latin(char):
            has_latin = True
        elif char not in CONFUSABLES:
            return False
    return has_latin


def _fold_word(match: re.Match[str]) -> str:
    word = match.group()
    if _ANY_CONFUSABLE.search(word) and _is_disguised_latin(word):
        return word.translate(_TABLE)
    return word


def fold_confusables(text: str) -> str:
    """`text` with the look-alike letters of mixed-script words replaced by Latin ones."""
    if not _ANY_CONFUSABLE.search(text):
        return text
    return _WORD.sub(_fold_word, text)
