"""Writes the obfuscated-prompt set from the hand-written base prompts.

    python -m models.train.make_obfuscated

Each base prompt of `obfuscation_bases.jsonl` (prompt injections, harmful requests and benign
prompts, with their per-policy targets and split) is written as it is and in six disguises,
seeded so the file is reproducible:

- `homoglyph`: some letters of some words replaced by Cyrillic or Greek look-alikes;
- `spaced`: every letter spelled out, one space between letters, two between words;
- `spaced_words`: a few words spelled out inside otherwise plain text;
- `zero_width`: zero-width characters and soft hyphens inside words;
- `mixed`: homoglyphs and zero-width characters together;
- `leetspeak`: letters replaced by digits and symbols, which normalization does not undo (it
  shows what is left to the model).

The split of a base prompt holds for all its variants, so no prompt is trained on in one
disguise and tested in another.
"""

from __future__ import annotations

import argparse
import json
import random
import unicodedata
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASES_FILE = HERE / "obfuscation_bases.jsonl"
OUT_FILE = HERE / "obfuscated.jsonl"

#: Latin letter -> the Unicode names of look-alikes an attacker would use for it.
_LOOK_ALIKES = {
    "a": ("CYRILLIC SMALL LETTER A", "GREEK SMALL LETTER ALPHA"),
    "c": ("CYRILLIC SMALL LETTER ES",),
    "e": ("CYRILLIC SMALL LETTER IE",),
    "i": ("CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I", "GREEK SMALL LETTER IOTA"),
    "j": ("CYRILLIC SMALL LETTER JE",),
    "o": ("CYRILLIC SMALL LETTER O", "GREEK SMALL LETTER OMICRON"),
    "p": ("CYRILLIC SMALL LETTER ER", "GREEK SMALL LETTER RHO"),
    "s": ("CYRILLIC SMALL LETTER DZE",),
    "x": ("CYRILLIC SMALL LETTER HA",),
    "y": ("CYRILLIC SMALL LETTER U",),
    "I": ("CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I", "GREEK CAPITAL LETTER IOTA"),
    "T": ("CYRILLIC CAPITAL LETTER TE",),
}
_INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad")
_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "l": "1"}


def homoglyph(text: str, rng: random.Random) -> str:
    """Swap about half the swappable letters of about two thirds of the words."""
    words = text.split(" ")
    for index, word in enumerate(words):
        if len(word) >= 3 and rng.random() < 0.65:
            words[index] = "".join(
                unicodedata.lookup(rng.choice(_LOOK_ALIKES[c]))
                if c in _LOOK_ALIKES and rng.random() < 0.5
                else c
                for c in word
            )
    return " ".join(words)


def spaced(text: str, rng: random.Random) -> str:
    """Every word spelled out letter by letter; two spaces between words."""
    return "  ".join(" ".join(word) for word in text.split(" "))


def spaced_words(text: str, rng: random.Random) -> str:
    """Two or three of the longer words spelled out, set off by two spaces."""
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    chosen = set(rng.sample(long_words, min(len(long_words), rng.randint(2, 3))))
    return " ".join(f" {' '.join(w)} " if i in chosen else w for i, w in enumerate(words))


def zero_width(text: str, rng: random.Random) -> str:
    """An invisible character inside most words of four letters or more."""
    words = text.split(" ")
    for index, word in enumerate(words):
        if len(word) >= 4 and rng.random() < 0.8:
            cut = rng.randint(1, len(word) - 1)
            words[index] = word[:cut] + rng.choice(_INVISIBLE) + word[cut:]
    return " ".join(words)


def mixed(text: str, rng: random.Random) -> str:
    return zero_width(homoglyph(text, rng), rng)


def leetspeak(text: str, rng: random.Random) -> str:
    """About two thirds of the replaceable letters written as digits."""
    return "".join(_LEET[c] if c in _LEET and rng.random() < 0.65 else c for c in text)


TECHNIQUES: dict[str, Callable[[str, random.Random], str]] = {
    "homoglyph": homoglyph,
    "spaced": spaced,
    "spaced_words": spaced_words,
    "zero_width": zero_width,
    "mixed": mixed,
    "leetspeak": leetspeak,
}


def variants(base: dict[str, object], index: int, seed: int) -> list[dict[str, object]]:
    """The base prompt as it is, then one row per technique."""
    text = str(base["text"])
    rows = [{**base, "technique": "plain", "base": index}]
    for name, disguise in TECHNIQUES.items():
        rng = random.Random(f"{seed}:{index}:{name}")  # noqa: S311 (reproducible data, not secrets)
        rows.append({**base, "text": disguise(text, rng), "technique": name, "base": index})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bases", type=Path, default=BASES_FILE, help="hand-written base prompts [%(default)s]"
    )
    parser.add_argument("--out", type=Path, default=OUT_FILE, help="file to write [%(default)s]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the disguises [0]")
    args = parser.parse_args(argv)
    bases = [json.loads(line) for line in args.bases.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for index, base in enumerate(bases) for row in variants(base, index, args.seed)]
    with args.out.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} prompts ({len(bases)} bases x {len(TECHNIQUES) + 1}) to {args.out}")


if __name__ == "__main__":
    main()
