"""A SentencePiece "precompiled charsmap" built from a per-character normalization table.

The `tokenizers` library normalizes text the way SentencePiece does with its `Precompiled`
normalizer, which reads a binary blob:

    u32 (little-endian)  size in bytes of the trie
    u32[]                the trie: a double array over the UTF-8 bytes of the source strings
    bytes                the replacement strings, each ended by a NUL byte

Each unit of the double array is one u32. A node's unit holds the byte that leads to it (bits
0-7), whether it ends a key (bit 8) and the XOR offset to its children (bits 10-31, shifted by 8
more when bit 9 is set). The children of a node at position `p` with offset `o` sit at
`p ^ o ^ byte`; the end-of-key child sits at `p ^ o` and holds the key's value (bit 31 set,
bits 0-30: where its replacement starts in the strings). A lookup compares only the byte stored
in the unit it lands on, so no two nodes may share a children base: this builder gives every
node its own.

The table maps single code points; an empty replacement deletes the character.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Offsets are stored in 21 bits (the 8-bit-shifted form is never needed for tables this small).
_MAX_OFFSET = (1 << 21) - 1
_LEAF = 1 << 31
_HAS_LEAF = 1 << 8
#: Lookups may probe `base ^ byte` for any byte: the array extends to the end of every block of 256.
_BLOCK = 256


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    value: int | None = None


def _trie(keys: Mapping[bytes, int]) -> _Node:
    root = _Node()
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"charsmap keys must be non-empty and free of NUL bytes, got {key!r}")
        node = root
        for byte in key:
            node = node.children.setdefault(byte, _Node())
        node.value = value
    return root


class _DoubleArray:
    """Places trie nodes into units, each node's children under a base no other node uses."""

    def __init__(self) -> None:
        self.units: list[int] = [0]
        self.taken: list[bool] = [True]  # position 0 is the root
        self.bases: set[int] = set()
        self._search_from = 1

    def _grow(self, size: int) -> None:
        if size > len(self.units):
            self.units.extend([0] * (size - len(self.units)))
            self.taken.extend([False] * (size - len(self.taken)))

    def _fits(self, base: int, labels: list[int]) -> bool:
        if base in self.bases:
            return False
        self._grow((base | (_BLOCK - 1)) + 1)
        return not any(self.taken[base ^ label] for label in labels)

    def _find_base(self, labels: list[int]) -> int:
        """The first base that puts `labels[0]` on a free position and every other label too."""
        position = self._search_from
        while True:
            self._grow(position + 1)
            if not self.taken[position] and self._fits(position ^ labels[0], labels):
                return position ^ labels[0]
            position += 1

    def _advance(self) -> None:
        while self._search_from < len(self.taken) and self.taken[self._search_from]:
            self._search_from += 1

    def place(self, node: _Node, position: int) -> None:
        """Give `node` (already at `position`) its children base, then place its subtree."""
        labels = ([0] if node.value is not None else []) + sorted(node.children)
        if not labels:
            return
        base = self._find_base(labels)
        offset = position ^ base
        if offset > _MAX_OFFSET:
            raise ValueError("normalization table too large for a charsmap")
        self.bases.add(base)
        for label in labels:
            self.taken[base ^ label] = True
        self._advance()
        self.units[position] |= offset << 10
        if node.value is not None:
            self.units[position] |= _HAS_LEAF
            self.units[base] = _LEAF | node.value
        for label, child in sorted(node.children.items()):
            self.units[base ^ label] = label
            self.place(child, base ^ label)

    def to_bytes(self) -> bytes:
        self._grow(-(-len(self.units) // _BLOCK) * _BLOCK)  # whole blocks, even for an empty table
        return struct.pack(f"<{len(self.units)}I", *self.units)


def build_charsmap(table: Mapping[int, str]) -> bytes:
    """The precompiled charsmap that replaces each code point of `table` by its string."""
    strings = bytearray()
    where: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for codepoint, replacement in sorted(table.items()):
        if "\0" in replacement:
            raise ValueError(f"replacement of U+{codepoint:04X} contains a NUL character")
        if replacement not in where:
            where[replacement] = len(strings)
            strings += replacement.encode("utf-8") + b"\0"
        keys[chr(codepoint).encode("utf-8")] = where[replacement]
    array = _DoubleArray()
    array.place(_trie(keys), 0)
    trie = array.to_bytes()
    return struct.pack("<I", len(trie)) + trie + bytes(strings)
