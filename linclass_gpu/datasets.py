"""MNIST and Fashion-MNIST: where their files are found, the checksums they must match, and a verified download.

The files are IDX (read by :mod:`linclass_gpu.idx`), each raw or gzip-compressed.

`load_mnist` looks for the four standard files in, in order: an explicit ``data_dir``; ``$LINCLASS_DATA``; the MNIST
copy vendored in this package; the user cache directory; ``/usr/share/datasets`` (Debian's dataset packages); and
finally downloads them from a public mirror into the cache. Wherever a file comes from, it must be the canonical
one: its header must declare the canonical dims (checked before anything is decompressed, so a crafted header cannot
make the reader allocate or inflate gigabytes) and its uncompressed bytes must match the canonical MD5.
"""

from __future__ import annotations

import http.client
import io
import math
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .files import open_regular_file, replace_atomically
from .idx import decode_idx

__all__ = ["KINDS", "CanonicalFile", "ImageDataset", "load_mnist", "user_cache_dir"]

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
# A download is at most this much larger than the canonical uncompressed file (gzip's header, trailer and stored
# blocks' 5 bytes per 64 KiB); more is refused unread.
_DOWNLOAD_SLACK_BYTES = 4096

VENDORED_MNIST_DIR = Path(__file__).resolve().parent / "data" / "mnist"


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
    values, actual_md5 = decode_idx(raw, source, expected.dims)
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
