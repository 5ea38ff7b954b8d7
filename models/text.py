"""Text normalization applied before a prompt is scored or used as a cache key."""

from __future__ import annotations

import re
import unicodedata

#: Zero-width characters that hide tokens from a reader but not from a model.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
#: Control characters (Unicode category Cc) that are not whitespace. Whitespace controls
#: (tab, newline, vertical tab, form feed, carriage return, U+001C..U+001F, U+0085) are kept.
_DROPPED_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_WHITESPACE_RUN = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC-normalize, drop zero-width and control characters, collapse whitespace runs, strip.

    Whitespace controls such as newline and tab survive the control-character filter, so they
    still separate words, then every whitespace run becomes a single space.
    """
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    text = _DROPPED_CONTROLS.sub("", text)
    return _WHITESPACE_RUN.sub(" ", text).strip()
