"""Find and read one JSON object in LLM output, repairing the usual breakages.

LLM output wraps its JSON in code fences or prose, stops mid-string when it runs out of tokens,
and writes Python-style dictionaries. `find_object` looks for the object inside a code fence when
there is one, else in the whole text, starting at each `{` in turn (at most a few). Each start is
read strictly first (`json.loads` on the balanced span, so text after the object is ignored);
when that fails a lenient reader takes over, which accepts:

- single-quoted strings (an apostrophe inside, as in 'don't', stays part of the string: only a
  quote followed by `,` `:` `}` `]` or the end closes one);
- trailing and doubled commas, unquoted keys and bare words, Python's True/False/None;
- unknown escapes and raw line breaks inside strings;
- an unterminated string or missing closing brackets at the end (a key left without a value
  there is dropped).

A key given twice keeps its first value, in strict and lenient reading alike.

The result says whether a repair was needed, so the caller can count repaired outputs.

Why not json-repair: measured on this project's parsing tests (tests/synth/test_parsing.py,
json-repair 0.64.6 behind the same strict-first reading), it passes 19 of 24 and gets wrong what
decides a row: it invents an empty value for a key cut off before its value (a missing rationale
passes as ""), lets a repeated key's later, truncated value win over the first, reads
"{ this is : not [ json" as an object, and keeps unknown escapes such as \\q.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: `{` positions tried, from the first, before giving up.
MAX_STARTS = 8
MAX_DEPTH = 32
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_STRUCTURAL = set("{}[]:,")
_CLOSES_SINGLE_QUOTE = set(",:}]")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "'": "'"}
_BARE_VALUES: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


@dataclass(frozen=True, slots=True)
class FoundJson:
    """A JSON value found in text, and whether it needed repair to be read."""

    value: Any
    repaired: bool


class JsonNotFound(ValueError):
    """No JSON value could be read; `had_brace` tells 'no object at all' from 'a broken one'."""

    def __init__(self, message: str, had_brace: bool) -> None:
        super().__init__(message)
        self.had_brace = had_brace


def fenced_or_whole(text: str) -> str:
    """The content of the first code fence holding a `{`, else the whole text."""
    for match in _FENCE.finditer(text):
        if "{" in match.group(1):
            return match.group(1)
    return text


def find_object(text: str) -> FoundJson:
    """The first JSON object in `text` (see the module docstring); raises `JsonNotFound`.

    A text that is, as a whole, valid JSON of another type (a list, a string) is returned as
    is, so the caller can say it is not an object.
    """
    body = fenced_or_whole(text).strip()
    try:
        return FoundJson(_strict(body), repaired=False)
    except ValueError:
        pass
    starts = [index for index, char in enumerate(body) if char == "{"][:MAX_STARTS]
    for start in starts:
        found = _read_at(body, start)
        if found is not None:
            return found
    raise JsonNotFound("no readable JSON object", had_brace=bool(starts))


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose repeated keys keep their first value (models repeat a key as they ramble)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        result.setdefault(key, value)
    return result


def _strict(text: str) -> Any:
    """`json.loads`, allowing raw control characters in strings, first of repeated keys winning."""
    return json.loads(text, strict=False, object_pairs_hook=_first_wins)


def _read_at(text: str, start: int) -> FoundJson | None:
    """The object starting at `text[start]`, strictly if possible, else leniently; None if neither."""
    end = balanced_end(text, start)
    if end is not None:
        try:
            value = _strict(text[start : end + 1])
        except ValueError:
            pass
        else:
            return FoundJson(value, repaired=False)
    reader = _LenientReader(text, start)
    try:
        value = reader.read_value(0)
    except _Unreadable:
        return None
    return FoundJson(value, repaired=True) if isinstance(value, dict) else None


def balanced_end(text: str, start: int) -> int | None:
    """The index of the `}` that closes the `{` at `start` (double-quoted strings skipped), or None."""
    depth = 0
    in_string = False
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
    return None


class _Unreadable(Exception):
    """The lenient reader met something it cannot make sense of."""


class _EndOfText(Exception):
    """The text ended where a value was expected."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # one of {}[]:, or "string" or "bare"
    value: Any = None


class _LenientReader:
    """A forgiving recursive-descent JSON reader that pulls tokens on demand from `start`."""

    def __init__(self, text: str, start: int) -> None:
        self.text = text
        self.pos = start

    # ------------------------------------------------------------------------------ values
    def read_value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Unreadable("nested too deeply")
        token = self._next()
        if token is None:
            raise _EndOfText
        if token.kind == "{":
            return self._object(depth + 1)
        if token.kind == "[":
            return self._array(depth + 1)
        if token.kind in ("string", "bare"):
            return token.value
        raise _Unreadable(f"unexpected {token.kind!r}")

    def _object(self, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while True:
            token = self._next()
            if token is None or token.kind == "}":
                return result  # a missing closing brace is added
            if token.kind == ",":
                continue
            if token.kind not in ("string", "bare"):
                raise _Unreadable(f"expected a key, got {token.kind!r}")
            key = str(token.value)
            colon = self._next()
            if colon is None:
                return result  # a key cut off at the end is dropped
            if colon.kind != ":":
                raise _Unreadable(f"expected ':' after key {key!r}")
            try:
                value = self.read_value(depth)
            except _EndOfText:
                return result
            result.setdefault(key, value)

    def _array(self, depth: int) -> list[Any]:
        result: list[Any] = []
        while True:
            self._skip_space()
            if self.pos >= len(self.text):
                return result
            if self.text[self.pos] in "],":
                token = self._next()
                if token is not None and token.kind == "]":
                    return result
                continue
            try:
                result.append(self.read_value(depth))
            except _EndOfText:
                return result

    # ------------------------------------------------------------------------------ tokens
    def _skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _next(self) -> _Token | None:
        self._skip_space()
        if self.pos >= len(self.text):
            return None
        char = self.text[self.pos]
        if char in _STRUCTURAL:
            self.pos += 1
            return _Token(char)
        if char == '"':
            return _Token("string", self._double_quoted())
        if char == "'":
            return _Token("string", self._single_quoted())
        return self._bare()

    def _double_quoted(self) -> str:
        """A double-quoted string from `pos`; unterminated ones end at the end of the text."""
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chars)
            if char == "\\":
                chars.append(self._escape())
                continue
            chars.append(char)
            self.pos += 1
        return "".join(chars)

    def _single_quoted(self) -> str:
        """A single-quoted string: only a quote followed by , : } ] or the end closes it."""
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                chars.append(self._escape())
                continue
            if char == "'" and self._closes_single_quote(self.pos + 1):
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        return "".join(chars)

    def _closes_single_quote(self, after: int) -> bool:
        rest = self.text[after:].lstrip()
        return not rest or rest[0] in _CLOSES_SINGLE_QUOTE

    def _escape(self) -> str:
        """The character a backslash escape at `pos` stands for; unknown escapes keep the character."""
        following = self.text[self.pos + 1 : self.pos + 2]
        if following == "u":
            digits = self.text[self.pos + 2 : self.pos + 6]
            if re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                self.pos += 6
                return chr(int(digits, 16))
        self.pos += 2
        return _ESCAPES.get(following, following)

    def _bare(self) -> _Token:
        """A run of non-structural characters: a number, a literal, or a bare word kept as text."""
        start = self.pos
        while (
            self.pos < len(self.text)
            and not self.text[self.pos].isspace()
            and self.text[self.pos] not in _STRUCTURAL
            and self.text[self.pos] not in "\"'"
        ):
            self.pos += 1
        word = self.text[start : self.pos]
        if word in _BARE_VALUES:
            return _Token("bare", _BARE_VALUES[word])
        try:
            return _Token("bare", json.loads(word))
        except ValueError:
            return _Token("bare", word)
