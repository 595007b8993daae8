"""The IDX format (the format of MNIST and Fashion-MNIST, http://yann.lecun.com/exdb/mnist/): a reader that checks
every file before it trusts it.

An IDX file is a 4-byte magic number — two zero bytes, a type code, the number of dimensions — then one big-endian
uint32 per dimension, then the values in C order, big-endian. Files come raw or gzip-compressed; gzip is recognised
by its magic bytes, never by the file name. A header's declared size is checked against the file's before anything is
allocated or decompressed, so a crafted header cannot make the reader allocate or inflate gigabytes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .files import open_regular_file

__all__ = ["GZIP_MAGIC", "IdxHeader", "decode_idx", "read_idx", "read_idx_header"]

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_SIZE_MODULUS = 2**32  # gzip records the uncompressed size modulo 2**32
# Deflate's largest expansion: a 258-byte match coded in 2 bits gives 1032 output bytes per input byte, so a gzip file
# of n bytes never holds more than 1032·n uncompressed bytes, whatever its header or trailer say.
_MAX_DEFLATE_RATIO = 1032
# gzip's readinto decompresses into a temporary as large as the request: reading in chunks bounds it.
_READ_CHUNK_BYTES = 1 << 20
# IDX type code -> dtype of the stored (big-endian) values.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class IdxHeader:
    """What the header of an IDX file declares.

    Attributes
    ----------
    dtype : numpy dtype
        Of the stored values, big-endian (``>u1``, ``>f4`` …).
    dims : tuple of int
        The array's shape.
    header_bytes : bytes
        The header as stored: the magic number and one uint32 per dimension.
    compressed : bool
        Whether the file is gzip-compressed.
    """

    dtype: np.dtype
    dims: tuple[int, ...]
    header_bytes: bytes = field(repr=False)
    compressed: bool

    @property
    def offset(self) -> int:
        """Where the payload starts in the uncompressed bytes: ``4 + 4·ndim``."""
        return len(self.header_bytes)

    @property
    def payload_size(self) -> int:
        """Bytes of the values: ``prod(dims)·itemsize``."""
        return math.prod(self.dims) * self.dtype.itemsize


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, raw or gzip-compressed.

    Parameters
    ----------
    path : str or path-like
        The file. Gzip compression is recognised by its magic bytes, not by the name.

    Returns
    -------
    ndarray of shape (d0, d1, ...)
        The values, shaped by the dims in the header, in native byte order; uint8 for type code 0x08.

    Raises
    ------
    ValueError
        If the file is not a regular file or not valid IDX: short header, bad magic number, unknown type code, a
        payload shorter or longer than the dims say (or than a gzip stream of its size can hold), or a corrupt or
        truncated gzip stream. The message names the file and the problem.
    """
    path = Path(path)
    with open_regular_file(path) as raw:
        return decode_idx(raw, path)[0]


def read_idx_header(path: str | os.PathLike) -> IdxHeader:
    """Read and check the header of one IDX file, raw or gzip-compressed, without reading its payload.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    IdxHeader
        The stored dtype, the dims, where the payload starts and whether the file is compressed.

    Raises
    ------
    ValueError
        If the header is not valid IDX or the file's size disagrees with its dims (as `read_idx`).
    """
    path = Path(path)
    with open_regular_file(path) as raw, _open_idx(raw, path) as (header, _):
        return header


def _read_exactly(stream, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream`` (reads may come short, gzip's do); return how many bytes arrived before EOF."""
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(buffer[filled:filled + _READ_CHUNK_BYTES])
        if not count:
            break
        filled += count
    return filled


def _uncompressed_size(raw, compressed: bool) -> int:
    """Bytes the open file holds once uncompressed: its size, or gzip's ISIZE trailer (that size mod 2**32)."""
    end = raw.seek(0, os.SEEK_END)
    if not compressed:
        return end
    if end < 4:
        return 0
    raw.seek(end - 4)
    return struct.unpack("<I", raw.read(4))[0]


def _discard(stream, limit: int) -> int:
    """Read and drop up to ``limit + 1`` bytes of ``stream`` a chunk at a time; return how many there were. Measures a
    payload's size without holding it, and without inflating more than ``limit + 1`` bytes of a gzip bomb."""
    count = 0
    while count <= limit:
        chunk = stream.read(min(_READ_CHUNK_BYTES, limit + 1 - count))
        if not chunk:
            break
        count += len(chunk)
    return count


@contextlib.contextmanager
def _open_idx(raw: BinaryIO, path: str | Path):
    """Read and check the header of the IDX file open in ``raw`` (raw or gzip, seekable); yield ``(header, stream)``
    with the stream (the file or its gzip decoder) at the first payload byte. ``path`` names the file in errors.

    The declared payload size is checked against the file's size (or gzip's trailer hint, and what deflate can expand
    the file to) before anything is allocated, so a corrupt header never asks for terabytes. Gzip errors, here or in
    the caller's reads, become ValueError.
    """
    compressed = raw.read(2) == GZIP_MAGIC
    stored_size = _uncompressed_size(raw, compressed)
    file_size = raw.seek(0, os.SEEK_END)
    raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw) if compressed else raw
    try:
        magic = bytearray(4)
        if _read_exactly(stream, memoryview(magic)) < 4:
            raise _invalid_idx(path, "short header (the magic number alone takes 4 bytes)")
        type_code, ndim = magic[2], magic[3]
        if magic[:2] != b"\x00\x00":
            raise _invalid_idx(path, f"bad magic number 0x{magic.hex()} (must start with two zero bytes)")
        if type_code not in _IDX_DTYPES:
            known = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
            raise _invalid_idx(path, f"unknown type code 0x{type_code:02x} (known: {known})")
        if ndim == 0:
            raise _invalid_idx(path, "bad magic number: 0 dimensions")
        dims_bytes = bytearray(4 * ndim)
        if _read_exactly(stream, memoryview(dims_bytes)) < len(dims_bytes):
            raise _invalid_idx(path, f"short header ({ndim} dimensions need {4 + 4 * ndim} bytes)")
        header = IdxHeader(np.dtype(_IDX_DTYPES[type_code]), struct.unpack(f">{ndim}I", dims_bytes),
                           bytes(magic + dims_bytes), compressed)
        # gzip's trailer only hints at the size (and lies in a corrupt stream), so a mismatch there is measured
        # by reading on.
        declared = header.offset + header.payload_size
        if compressed and declared > _MAX_DEFLATE_RATIO * file_size:
            raise _invalid_idx(path, f"dims {header.dims} of {header.dtype.name} need {header.payload_size} "
                                     f"bytes, more than a gzip file of {file_size} bytes can hold")
        size_matches = declared % _GZIP_SIZE_MODULUS == stored_size if compressed else declared == stored_size
        if not size_matches:
            raise _payload_size_error(path, header, _discard(stream, header.payload_size) if compressed
                                      else stored_size - header.offset)
        yield header, stream
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile (bad header or CRC) is an OSError
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc


def decode_idx(raw: BinaryIO, path: str | Path,
               expected_dims: tuple[int, ...] | None = None) -> tuple[np.ndarray, str]:
    """Decode the IDX file open in ``raw``, raw or gzip, straight into a new array; also return the MD5 of its
    uncompressed bytes. With ``expected_dims``, a header declaring other dims or values than uint8 is refused before
    the payload is read. ``path`` names the file in errors.

    The payload is decompressed into the array's own memory, so reading needs no more memory than the array: no copy
    of the file's bytes is ever held beside it; trailing bytes are counted without being kept.
    """
    with _open_idx(raw, path) as (header, stream):
        if expected_dims is not None and (header.dtype != np.uint8 or header.dims != expected_dims):
            raise ValueError(f"{path}: dims {header.dims} of {header.dtype.name} are not the canonical file's "
                             f"{expected_dims} of uint8")
        try:
            values = np.empty(math.prod(header.dims), dtype=header.dtype)
        except (MemoryError, ValueError) as exc:
            raise _invalid_idx(path, f"dims {header.dims} of {header.dtype.name} need {header.payload_size} bytes, "
                                     "more than can be allocated") from exc
        payload = memoryview(values).cast("B")
        received = _read_exactly(stream, payload)
        trailing = _discard(stream, header.payload_size) if received == len(payload) else 0
    if received < len(payload) or trailing:
        raise _payload_size_error(path, header, received + trailing)
    md5 = hashlib.md5(header.header_bytes, usedforsecurity=False)
    md5.update(payload)
    if header.dtype.byteorder == ">":  # IDX is big-endian: swap multi-byte values to native order, in place
        values = values.byteswap(inplace=True).view(header.dtype.newbyteorder("="))
    try:
        return values.reshape(header.dims), md5.hexdigest()
    except ValueError as exc:  # an empty payload whose other dims multiply past what NumPy can index
        raise _invalid_idx(path, f"dims {header.dims} cannot shape an array: {exc}") from exc


def _invalid_idx(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: not a valid IDX file: {problem}")


def _payload_size_error(path: Path, header: IdxHeader, held: int) -> ValueError:
    """The error for a payload of ``held`` bytes where ``header`` declares another size."""
    problem = "truncated" if held < header.payload_size else "trailing bytes"
    size = f"more than {2 * header.payload_size}" if held > 2 * header.payload_size else f"{held}"
    return _invalid_idx(path, f"payload is {size} bytes but dims {header.dims} of {header.dtype.name} need "
                              f"{header.payload_size} ({problem})")
