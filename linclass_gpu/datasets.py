"""MNIST and Fashion-MNIST: the IDX reader, checksums, the search path and a verified download.

IDX (the format of both data sets, http://yann.lecun.com/exdb/mnist/) is a 4-byte magic number — two zero bytes,
a type code, the number of dimensions — then one big-endian uint32 per dimension, then the values in C order,
big-endian. Files come raw or gzip-compressed; gzip is recognised by its magic bytes, never by the file name.

`load_mnist` looks for the four standard files in, in order: an explicit ``data_dir``; ``$LINCLASS_DATA``; the MNIST
copy vendored in this package; the user cache directory; ``/usr/share/datasets`` (Debian's dataset packages); and
finally downloads them from a public mirror into the cache. Wherever a file comes from, it must be the canonical one: its header must declare the canonical dims (checked
before anything is decompressed, so a crafted header cannot make the reader allocate or inflate gigabytes) and its
uncompressed bytes must match the canonical MD5.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import math
import os
import struct
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .files import open_regular_file, replace_atomically

__all__ = ["KINDS", "CanonicalFile", "IdxHeader", "ImageDataset", "load_mnist", "read_idx", "read_idx_header", "user_cache_dir"]

KINDS = ("mnist", "fashion-mnist")
IMAGE_SHAPE = (28, 28)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)



@dataclass(frozen=True)
class CanonicalFile:
    """What one of the four files of a data set must be, once uncompressed: uint8 values of these dims, this MD5.

    The MD5 is of the uncompressed bytes, header included, because each mirror's gzip wrapper differs.
    """

    dims: tuple[int, ...]
    md5: str


# MNIST digests computed from the decompressed contents of the vendored copies (linclass_gpu/data/mnist, taken from
# the project's shared data set), which are byte-identical to the canonical files.
MNIST_FILES = {
    TRAIN_IMAGES: CanonicalFile((60000, *IMAGE_SHAPE), "6bbc9ace898e44ae57da46a324031adb"),
    TRAIN_LABELS: CanonicalFile((60000,), "a25bea736e30d166cdddb491f175f624"),
    TEST_IMAGES: CanonicalFile((10000, *IMAGE_SHAPE), "2646ac647ad5339dbf082846283269ea"),
    TEST_LABELS: CanonicalFile((10000,), "27ae3e4e09519cfbb04c329615203637"),
}
# Fashion-MNIST digests of the files Zalando publishes (github.com/zalandoresearch/fashion-mnist, data/fashion, whose
# .gz files match the MD5s in its README), decompressed; the two label files were checked here against that copy.
FASHION_MNIST_FILES = {
    TRAIN_IMAGES: CanonicalFile((60000, *IMAGE_SHAPE), "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    TRAIN_LABELS: CanonicalFile((60000,), "9018921c3c673c538a1fc5bad174d6f9"),
    TEST_IMAGES: CanonicalFile((10000, *IMAGE_SHAPE), "8181f5470baa50b63fa0f6fddb340f0a"),
    TEST_LABELS: CanonicalFile((10000,), "15d484375f8d13e6eb1aabb0c3f46965"),
}

# Base URLs tried in order; each serves ``<name>.gz``. Module-level so tests can point them at a loopback server.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MNIST_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
DOWNLOAD_TIMEOUT_SECONDS = 60.0

VENDORED_MNIST_DIR = Path(__file__).resolve().parent / "data" / "mnist"

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_SIZE_MODULUS = 2**32  # gzip records the uncompressed size modulo 2**32
# Deflate's largest expansion: a 258-byte match coded in 2 bits gives 1032 output bytes per input byte, so a gzip file
# of n bytes never holds more than 1032·n uncompressed bytes, whatever its header or trailer say.
_MAX_DEFLATE_RATIO = 1032
# A download is at most this much larger than the canonical uncompressed file (gzip's header, trailer and stored
# blocks' 5 bytes per 64 KiB); more is refused unread.
_DOWNLOAD_SLACK_BYTES = 4096
# gzip's readinto decompresses into a temporary as large as the request: reading in chunks bounds it.
_READ_CHUNK_BYTES = 1 << 20
# IDX type code -> dtype of the stored (big-endian) values.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A train/test split of 28×28 grayscale images with integer class labels.

    Attributes
    ----------
    train_images : ndarray of shape (n_train, 784), uint8
        One flattened image per row (pixels 0–255); ``reshape(-1, *image_shape)`` recovers the images.
    train_labels : ndarray of shape (n_train,), uint8
        Class of each training image.
    test_images : ndarray of shape (n_test, 784), uint8
    test_labels : ndarray of shape (n_test,), uint8
    image_shape : tuple of int
        ``(28, 28)``, the shape of one image.
    kind : str
        ``"mnist"`` or ``"fashion-mnist"``.
    directory : Path
        The directory the files were read from.
    """

    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    image_shape: tuple[int, int]
    kind: str
    directory: Path


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
        return _decode_idx(raw, path)[0]


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


def user_cache_dir(kind: str = "mnist") -> Path:
    """The directory downloads of `kind` are cached in (it may not exist yet).

    Parameters
    ----------
    kind : {"mnist", "fashion-mnist"}

    Returns
    -------
    Path
        ``$XDG_CACHE_HOME/linclass_gpu/<kind>``, or ``~/.cache/linclass_gpu/<kind>`` when ``$XDG_CACHE_HOME`` is
        unset or relative (the XDG base directory specification says to ignore a relative one).
    """
    xdg_cache_home = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg_cache_home) if os.path.isabs(xdg_cache_home) else Path.home() / ".cache"
    return base / "linclass_gpu" / kind


def load_mnist(
    data_dir: str | os.PathLike | None = None, kind: str = "mnist", download: bool = True
) -> ImageDataset:
    """Load MNIST or Fashion-MNIST as flat uint8 rows, finding or downloading the four standard IDX files.

    The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each raw or with ``.gz``. They are looked for in, in order:

    1. `data_dir`, if given (and only there: if it lacks a file, that is an error);
    2. ``$LINCLASS_DATA/<kind>``, then ``$LINCLASS_DATA``;
    3. the copy vendored in this package (MNIST only);
    4. the user cache directory, `user_cache_dir`;
    5. ``/usr/share/datasets/<kind>``, where Debian's packages (``dataset-fashion-mnist``) install them;
    6. a download from the mirrors (``MNIST_MIRRORS`` or ``FASHION_MNIST_MIRRORS``) into the user cache, if
       `download` is true. Each file is verified before it is written atomically; a failed or mismatching download
       leaves nothing behind.

    Every file, found or downloaded, must be the canonical one (``MNIST_FILES``, ``FASHION_MNIST_FILES``): its
    header must declare the canonical dims of uint8 (checked before its payload is read or decompressed) and its
    uncompressed bytes must match the canonical MD5.

    Parameters
    ----------
    data_dir : str or path-like, optional
        A directory holding the four files.
    kind : {"mnist", "fashion-mnist"}
    download : bool, default True
        Whether to download the files when they are found nowhere else.

    Returns
    -------
    ImageDataset
        ``train_images`` (60000, 784) and ``test_images`` (10000, 784) uint8 rows, ``train_labels`` (60000,) and
        ``test_labels`` (10000,) uint8, ``image_shape=(28, 28)``, `kind`, and the ``directory`` read from.

    Raises
    ------
    FileNotFoundError
        If `data_dir` lacks a file, or if the files are found nowhere and cannot be downloaded; the message lists
        every place looked in and how to supply the files.
    ValueError
        If `kind` is unknown, or a file is not valid IDX, declares other dims than the canonical file's, or does not
        match its canonical checksum; the message names the file.

    Examples
    --------
    >>> data = load_mnist()
    >>> data.train_images.shape, data.train_labels.shape
    ((60000, 784), (60000,))
    >>> first_image = data.train_images[0].reshape(data.image_shape)
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        missing = _missing_idx_files(directory)
        if missing:
            raise FileNotFoundError(
                f"data_dir {directory} does not hold the {kind} files: {_describe_missing(directory, missing)}"
            )
        return _load_directory(directory, kind)

    places_looked = []
    for place, directory in _search_directories(kind):
        if directory is None:
            places_looked.append(f"{place}: not set")
            continue
        missing = _missing_idx_files(directory)
        if not missing:
            return _load_directory(directory, kind)
        places_looked.append(f"{directory} ({place}): {_describe_missing(directory, missing)}")

    cache_dir = user_cache_dir(kind)
    if not download:
        places_looked.append("download: not attempted (download=False)")
    else:
        download_failures = _download_missing_files(kind, cache_dir)
        if not download_failures:
            return _load_directory(cache_dir, kind)
        places_looked.extend(download_failures)
    raise FileNotFoundError(
        f"{kind} IDX files not found. Looked in, in order:\n"
        + "".join(f"  - {place}\n" for place in places_looked)
        + f"Supply the four files ({', '.join(IDX_FILE_NAMES)}; each raw or .gz) by passing data_dir=<directory>, "
        f"setting LINCLASS_DATA=<directory>, or putting them in {cache_dir}"
        + ("" if download else ", or allow download=True")
        + "."
    )


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


def _decode_idx(raw: BinaryIO, path: str | Path, expected: CanonicalFile | None = None) -> tuple[np.ndarray, str]:
    """Decode the IDX file open in ``raw``, raw or gzip, straight into a new array; also return the MD5 of its
    uncompressed bytes. With ``expected``, a header declaring other dims or values than uint8 is refused before the
    payload is read.

    The payload is decompressed into the array's own memory, so reading needs no more memory than the array: no copy
    of the file's bytes is ever held beside it; trailing bytes are counted without being kept.
    """
    with _open_idx(raw, path) as (header, stream):
        if expected is not None and (header.dtype != np.uint8 or header.dims != expected.dims):
            raise ValueError(f"{path}: dims {header.dims} of {header.dtype.name} are not the canonical file's "
                             f"{expected.dims} of uint8")
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


# Where Debian's dataset packages put their files (dataset-fashion-mnist: /usr/share/datasets/fashion-mnist).
SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")


def _search_directories(kind: str) -> list[tuple[str, Path | None]]:
    """(description, directory) for each place after an explicit data_dir, in search order; None if unset."""
    env_dir = os.environ.get("LINCLASS_DATA")
    if env_dir:
        places = [("$LINCLASS_DATA/<kind>", Path(env_dir) / kind), ("$LINCLASS_DATA", Path(env_dir))]
    else:
        places = [("$LINCLASS_DATA", None)]
    if kind == "mnist":
        places.append(("vendored copy", VENDORED_MNIST_DIR))
    places.append(("user cache", user_cache_dir(kind)))
    places.append(("system datasets (Debian's dataset-* packages)", SYSTEM_DATASETS_DIR / kind))
    return places


def _idx_file_path(directory: Path, name: str) -> Path | None:
    """The file holding `name` in `directory`, raw preferred over .gz; None if neither exists."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_idx_files(directory: Path) -> list[str]:
    return [name for name in IDX_FILE_NAMES if _idx_file_path(directory, name) is None]


def _describe_missing(directory: Path, missing: list[str]) -> str:
    if not directory.is_dir():
        return "no such directory"
    return "missing " + ", ".join(missing)


def _load_directory(directory: Path, kind: str) -> ImageDataset:
    train_images, train_labels = _read_split(directory, kind, TRAIN_IMAGES, TRAIN_LABELS)
    test_images, test_labels = _read_split(directory, kind, TEST_IMAGES, TEST_LABELS)
    return ImageDataset(train_images, train_labels, test_images, test_labels, IMAGE_SHAPE, kind, directory)


def _read_split(directory: Path, kind: str, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and verify one split.

    Returns
    -------
    image_rows : ndarray of shape (n, 784), uint8
    labels : ndarray of shape (n,), uint8
    """
    images = _read_local(_idx_file_path(directory, images_name), images_name, kind)
    labels = _read_local(_idx_file_path(directory, labels_name), labels_name, kind)
    return images.reshape(len(images), -1), labels


def _canonical_files(kind: str) -> dict[str, CanonicalFile]:
    return MNIST_FILES if kind == "mnist" else FASHION_MNIST_FILES


def _read_local(path: Path, name: str, kind: str) -> np.ndarray:
    with open_regular_file(path) as raw:
        return _read_canonical(raw, path, name, kind)


def _read_canonical(raw: BinaryIO, source: str | Path, name: str, kind: str) -> np.ndarray:
    """The values of the IDX file ``name`` of ``kind`` open in ``raw``, refused unless it is the canonical file:
    its dims are checked from the header before the payload is read, then the MD5 of its uncompressed bytes."""
    expected = _canonical_files(kind)[name]
    values, actual_md5 = _decode_idx(raw, source, expected)
    if actual_md5 != expected.md5:
        other = next((other for other in KINDS if other != kind and _canonical_files(other)[name].md5 == actual_md5),
                     None)
        raise ValueError(f"{source} is the {other} file {name}, not {kind}" if other else
                         f"{source}: MD5 mismatch: expected {expected.md5}, got {actual_md5}")
    return values


def _download_missing_files(kind: str, directory: Path) -> list[str]:
    """Download the files `directory` lacks, trying each mirror in turn; each is verified before it is written.

    Returns
    -------
    list of str
        What failed, one line per attempt; empty if all four files are now in `directory`.
    """
    mirrors = MNIST_MIRRORS if kind == "mnist" else FASHION_MNIST_MIRRORS
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"download: cannot create {directory} ({exc})"]
    for name in _missing_idx_files(directory):
        expected = _canonical_files(kind)[name]
        # A gzip of the canonical file is never much larger than the file itself: read no more than that.
        limit = 4 + 4 * len(expected.dims) + math.prod(expected.dims) + _DOWNLOAD_SLACK_BYTES
        failures = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                    payload = response.read(limit + 1)
                if len(payload) > limit:
                    raise ValueError(f"more than {limit} bytes, larger than any gzip of the canonical file")
                _read_canonical(io.BytesIO(payload), url, name, kind)
            except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
                failures.append(f"{url}: {exc}")
                continue
            with replace_atomically(directory / f"{name}.gz") as file:
                file.write(payload)
            break
        else:
            return failures or [f"download: no mirror configured for {kind}"]
    return []
