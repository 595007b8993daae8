"""Tests of linclass_gpu.idx: the IDX reader, raw and gzip, on good files, corrupt ones, fuzzed ones and bombs.

Small synthetic IDX files are written into tmp_path.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np
import pytest
from helpers import IDX_TYPE_CODES, gzip_declaring, idx_bytes, peak_bytes_while
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linclass_gpu.idx import read_idx, read_idx_header


@pytest.mark.parametrize("dtype", list(IDX_TYPE_CODES))
@pytest.mark.parametrize(("compressed", "file_name"), [(False, "data.idx"), (True, "data.idx"),
                                                      (False, "data.gz"), (True, "data.gz")])
def test_read_idx_round_trip_detects_gzip_by_magic_not_name(tmp_path, dtype, compressed, file_name):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    content = idx_bytes(array)
    path = tmp_path / file_name
    path.write_bytes(gzip.compress(content) if compressed else content)

    result = read_idx(path)

    assert result.dtype == dtype and result.dtype.isnative
    assert result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_read_idx_header_declares_dtype_dims_and_offset_without_the_payload(tmp_path, compressed):
    content = idx_bytes(np.zeros((3, 5, 7), dtype=np.int16))
    path = tmp_path / "values"
    path.write_bytes(gzip.compress(content) if compressed else content)
    header = read_idx_header(path)
    assert (header.dtype, header.dims, header.offset, header.compressed) == (np.dtype(">i2"), (3, 5, 7), 16, compressed)
    assert header.payload_size == 3 * 5 * 7 * 2 and header.header_bytes == content[:16]


def test_read_idx_one_dimension_and_empty(tmp_path):
    (tmp_path / "labels").write_bytes(idx_bytes(np.array([3, 1, 4], dtype=np.uint8)))
    (tmp_path / "empty").write_bytes(idx_bytes(np.zeros((0, 28, 28), dtype=np.uint8)))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [3, 1, 4])
    assert read_idx(str(tmp_path / "empty")).shape == (0, 28, 28)


_GOOD = idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 251)


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(b"", "short header", id="empty"),
        pytest.param(b"\x00\x00\x08", "short header", id="3-byte-header"),
        pytest.param(_GOOD[:10], "short header", id="dims-cut-off"),
        pytest.param(b"\x01\x00" + _GOOD[2:], "bad magic number", id="nonzero-magic"),
        pytest.param(b"\x00\x00\x07" + _GOOD[3:], "unknown type code 0x07", id="type-code"),
        pytest.param(b"\x00\x00\x08\x00", "0 dimensions", id="zero-ndim"),
        pytest.param(_GOOD[:-1], "truncated", id="payload-short"),
        pytest.param(_GOOD + b"\x00", "trailing bytes", id="payload-long"),
        pytest.param(gzip.compress(_GOOD)[:-20], "gzip", id="gzip-truncated"),
        pytest.param(_flip_middle_byte(gzip.compress(_GOOD)), "gzip", id="gzip-corrupt"),
        pytest.param(gzip.compress(_GOOD)[:-4] + b"\x00\x00\x00\x00", "gzip", id="gzip-bad-length"),
        pytest.param(gzip.compress(_GOOD[:-28]), "truncated", id="gzip-of-truncated-payload"),
    ],
)
def test_read_idx_corrupt_file_raises_value_error_naming_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "corrupt-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError) as excinfo:
        read_idx(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert problem in message


@st.composite
def idx_like_bytes(draw) -> bytes:
    """Bytes shaped like IDX — known or unknown type code, any ndim and dims — with a payload of any length."""
    type_code = draw(st.sampled_from([*IDX_TYPE_CODES.values(), 0x00, 0x07, 0xFF]))
    ndim = draw(st.integers(0, 4))
    dims = draw(st.lists(st.one_of(st.integers(0, 4), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    content = bytes([0, 0, type_code, ndim]) + struct.pack(f">{ndim}I", *dims) + draw(st.binary(max_size=80))
    return content[: draw(st.integers(0, len(content)))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=idx_like_bytes(), compressed=st.booleans())
def test_read_idx_never_fails_other_than_with_value_error(tmp_path, content, compressed):
    path = tmp_path / "fuzzed"
    path.write_bytes(gzip.compress(content) if compressed else content)
    try:
        result = read_idx(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        ndim = content[3]
        assert result.shape == struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(gzip.compress(_GOOD)) - 1), compressed=st.booleans())
def test_read_idx_any_truncation_raises_value_error(tmp_path, cut, compressed):
    content = gzip.compress(_GOOD) if compressed else _GOOD
    path = tmp_path / "truncated"
    path.write_bytes(content[: min(cut, len(content) - 1)])
    with pytest.raises(ValueError, match="truncated|short header|gzip"):
        read_idx(path)


def test_read_idx_payload_error_gives_dims_and_sizes(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(_GOOD[:-5])
    with pytest.raises(ValueError, match=r"payload is 1563 bytes but dims \(2, 28, 28\) of uint8 need 1568"):
        read_idx(path)




def test_gzip_declaring_more_than_deflate_can_expand_is_refused_unread(tmp_path):
    header = bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 1 << 20, 1 << 10)  # 1 GiB of uint8
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip_declaring(header, len(header) + (1 << 30)))
    with pytest.raises(ValueError, match="more than a gzip file of .* bytes can hold"):
        read_idx(path)
    assert peak_bytes_while(lambda: read_idx(path)) < 1 << 20


@pytest.mark.parametrize("trailer_agrees", [True, False], ids=["trailer-agrees", "trailer-disagrees"])
def test_trailing_gigabytes_are_counted_not_inflated(tmp_path, trailer_agrees):
    """A valid payload followed by 256 MiB of zeros (256 KiB compressed): refused after reading a payload's worth."""
    path = tmp_path / "trailing.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    body = compressor.compress(_GOOD) + b"".join(compressor.compress(bytes(1 << 20)) for _ in range(256))
    body += compressor.flush()
    declared = len(_GOOD) if trailer_agrees else len(_GOOD) + (256 << 20)
    path.write_bytes(body[:-4] + struct.pack("<I", declared % 2**32))
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(path)
    assert peak_bytes_while(lambda: read_idx(path)) < 4 << 20


def test_reading_a_fifo_is_refused_not_blocked(tmp_path):
    fifo = tmp_path / "fifo-idx"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        read_idx(fifo)
