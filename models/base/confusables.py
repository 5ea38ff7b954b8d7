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

#: Unicode names of look-alikes -> Latin letter, case kept. Fullwidth and mathematical letters
#: need no entry: NFKC maps them to ASCII before folding.
_LOOK_ALIKES: tuple[tuple[str, str], ...] = (
    ("CYRILLIC SMALL LETTER A", "a"),
    ("CYRILLIC SMALL LETTER IE", "e"),
    ("CYRILLIC SMALL LETTER O", "o"),
    ("CYRILLIC SMALL LETTER ER", "p"),
    ("CYRILLIC SMALL LETTER ES", "c"),
    ("CYRILLIC SMALL LETTER HA", "x"),
    ("CYRILLIC SMALL LETTER U", "y"),
    ("CYRILLIC SMALL LETTER STRAIGHT U", "y"),
    ("CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I", "i"),
    ("CYRILLIC SMALL LETTER DZE", "s"),
    ("CYRILLIC SMALL LETTER JE", "j"),
    ("CYRILLIC SMALL LETTER KOMI DE", "d"),
    ("CYRILLIC SMALL LETTER QA", "q"),
    ("CYRILLIC SMALL LETTER WE", "w"),
    ("CYRILLIC SMALL LETTER SHHA", "h"),
    ("CYRILLIC SMALL LETTER PALOCHKA", "l"),
    ("CYRILLIC SMALL LETTER TE", "t"),
    ("CYRILLIC SMALL LETTER KA", "k"),
    ("CYRILLIC SMALL LETTER EN", "h"),
    ("CYRILLIC SMALL LETTER EM", "m"),
    ("CYRILLIC SMALL LETTER PE", "n"),
    ("CYRILLIC SMALL LETTER GHE", "r"),
    ("CYRILLIC SMALL LETTER SOFT SIGN", "b"),
    ("CYRILLIC CAPITAL LETTER A", "A"),
    ("CYRILLIC CAPITAL LETTER VE", "B"),
    ("CYRILLIC CAPITAL LETTER IE", "E"),
    ("CYRILLIC CAPITAL LETTER KA", "K"),
    ("CYRILLIC CAPITAL LETTER EM", "M"),
    ("CYRILLIC CAPITAL LETTER EN", "H"),
    ("CYRILLIC CAPITAL LETTER O", "O"),
    ("CYRILLIC CAPITAL LETTER ER", "P"),
    ("CYRILLIC CAPITAL LETTER ES", "C"),
    ("CYRILLIC CAPITAL LETTER TE", "T"),
    ("CYRILLIC CAPITAL LETTER HA", "X"),
    ("CYRILLIC CAPITAL LETTER U", "Y"),
    ("CYRILLIC CAPITAL LETTER STRAIGHT U", "Y"),
    ("CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I", "I"),
    ("CYRILLIC CAPITAL LETTER JE", "J"),
    ("CYRILLIC CAPITAL LETTER DZE", "S"),
    ("CYRILLIC CAPITAL LETTER QA", "Q"),
    ("CYRILLIC CAPITAL LETTER WE", "W"),
    ("CYRILLIC CAPITAL LETTER SHHA", "H"),
    ("CYRILLIC LETTER PALOCHKA", "I"),
    ("GREEK SMALL LETTER ALPHA", "a"),
    ("GREEK SMALL LETTER IOTA", "i"),
    ("GREEK SMALL LETTER KAPPA", "k"),
    ("GREEK SMALL LETTER NU", "v"),
    ("GREEK SMALL LETTER OMICRON", "o"),
    ("GREEK SMALL LETTER RHO", "p"),
    ("GREEK SMALL LETTER UPSILON", "u"),
    ("GREEK SMALL LETTER CHI", "x"),
    ("GREEK SMALL LETTER EPSILON", "e"),
    ("GREEK SMALL LETTER TAU", "t"),
    ("GREEK SMALL LETTER ETA", "n"),
    ("GREEK SMALL LETTER OMEGA", "w"),
    ("GREEK SMALL LETTER GAMMA", "y"),
    ("GREEK LETTER YOT", "j"),
    ("GREEK CAPITAL LETTER ALPHA", "A"),
    ("GREEK CAPITAL LETTER BETA", "B"),
    ("GREEK CAPITAL LETTER EPSILON", "E"),
    ("GREEK CAPITAL LETTER ZETA", "Z"),
    ("GREEK CAPITAL LETTER ETA", "H"),
    ("GREEK CAPITAL LETTER IOTA", "I"),
    ("GREEK CAPITAL LETTER KAPPA", "K"),
    ("GREEK CAPITAL LETTER MU", "M"),
    ("GREEK CAPITAL LETTER NU", "N"),
    ("GREEK CAPITAL LETTER OMICRON", "O"),
    ("GREEK CAPITAL LETTER RHO", "P"),
    ("GREEK CAPITAL LETTER TAU", "T"),
    ("GREEK CAPITAL LETTER UPSILON", "Y"),
    ("GREEK CAPITAL LETTER CHI", "X"),
)
#: Look-alike character -> Latin letter.
CONFUSABLES: dict[str, str] = {unicodedata.lookup(name): latin for name, latin in _LOOK_ALIKES}

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
