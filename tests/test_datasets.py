"""Tests of linclass_gpu.datasets: checksums, the search path and the download (the IDX reader: test_idx.py).

Small synthetic IDX files are written into tmp_path; downloads come from a loopback HTTP server (127.0.0.1 only).
Every test runs isolated from the machine: no $LINCLASS_DATA, the cache under tmp_path, the vendored directory
pointed at an empty place and no mirrors, unless the test sets them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import gzip_declaring, idx_bytes, peak_bytes_while

from linclass_gpu import datasets
from linclass_gpu.datasets import (
    IDX_FILE_NAMES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    CanonicalFile,
    ImageDataset,
    load_mnist,
    user_cache_dir,
)

REAL_VENDORED_MNIST_DIR = datasets.VENDORED_MNIST_DIR


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def small_split_arrays(seed: int = 0, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    """The four arrays of a tiny data set, keyed by IDX file name."""
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, size=n_train, dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }


def write_data_dir(directory: Path, arrays: dict[str, np.ndarray], compress: bool | tuple[bool, ...] = True) -> Path:
    """Write `arrays` as the four IDX files into `directory` (gzip-compressed where `compress` says)."""
    directory.mkdir(parents=True, exist_ok=True)
    compress_each = compress if isinstance(compress, tuple) else (compress,) * len(arrays)
    for (name, array), compressed in zip(arrays.items(), compress_each):
        content = idx_bytes(array)
        if compressed:
            (directory / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (directory / name).write_bytes(content)
    return directory


def canonical_files(arrays: dict[str, np.ndarray]) -> dict[str, CanonicalFile]:
    """A table of canonical files that `arrays` satisfy (their dims and MD5s)."""
    return {name: CanonicalFile(array.shape, md5(idx_bytes(array))) for name, array in arrays.items()}


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("LINCLASS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "VENDORED_MNIST_DIR", tmp_path / "no-vendored-copy")
    monkeypatch.setattr(datasets, "SYSTEM_DATASETS_DIR", tmp_path / "no-system-datasets")
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", ())
    monkeypatch.setattr(datasets, "FASHION_MNIST_MIRRORS", ())
    monkeypatch.setattr(datasets, "DOWNLOAD_TIMEOUT_SECONDS", 5.0)
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def tiny_mnist(monkeypatch) -> dict[str, np.ndarray]:
    """Tiny arrays accepted as MNIST: MNIST_FILES is patched to their dims and digests."""
    arrays = small_split_arrays(seed=1)
    monkeypatch.setattr(datasets, "MNIST_FILES", canonical_files(arrays))
    return arrays


@pytest.fixture
def tiny_fashion(monkeypatch) -> dict[str, np.ndarray]:
    """Tiny arrays accepted as Fashion-MNIST: FASHION_MNIST_FILES is patched to their dims and digests."""
    arrays = small_split_arrays(seed=0)
    monkeypatch.setattr(datasets, "FASHION_MNIST_FILES", canonical_files(arrays))
    return arrays


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """A directory served by a loopback HTTP server: yields (root, base URL, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requested = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_port}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve(root: Path, subdirectory: str, arrays: dict[str, np.ndarray]) -> None:
    """Publish `arrays` as <name>.gz files under root/subdirectory, as a mirror does."""
    write_data_dir(root / subdirectory, arrays, compress=True)


def refused_url() -> str:
    """A loopback URL with nothing listening on its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---------------------------------------------------------------------------------------------------------------------
# loading a directory


@pytest.mark.parametrize("compress", [True, False, (True, False, False, True)], ids=["gz", "raw", "mixed"])
def test_load_directory_returns_flat_uint8_rows(tmp_path, tiny_fashion, compress):
    arrays = tiny_fashion
    directory = write_data_dir(tmp_path / "fashion", arrays, compress)

    data = load_mnist(directory, kind="fashion-mnist")

    assert isinstance(data, ImageDataset)
    assert data.kind == "fashion-mnist" and data.directory == directory and data.image_shape == (28, 28)
    assert data.train_images.shape == (5, 784) and data.test_images.shape == (3, 784)
    assert data.train_labels.shape == (5,) and data.test_labels.shape == (3,)
    for array in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        assert array.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images.reshape(-1, *data.image_shape), arrays[TRAIN_IMAGES])
    np.testing.assert_array_equal(data.test_images.reshape(-1, 28, 28), arrays[TEST_IMAGES])
    np.testing.assert_array_equal(data.train_labels, arrays[TRAIN_LABELS])
    np.testing.assert_array_equal(data.test_labels, arrays[TEST_LABELS])
    with pytest.raises(AttributeError):
        data.kind = "mnist"


def test_raw_file_preferred_over_gz_when_both_exist(tmp_path, tiny_fashion):
    other_labels = (tiny_fashion[TRAIN_LABELS] + 1) % 10
    directory = write_data_dir(tmp_path / "d", {**tiny_fashion, TRAIN_LABELS: other_labels}, compress=True)
    (directory / TRAIN_LABELS).write_bytes(idx_bytes(tiny_fashion[TRAIN_LABELS]))
    np.testing.assert_array_equal(load_mnist(directory, kind="fashion-mnist").train_labels,
                                  tiny_fashion[TRAIN_LABELS])


@pytest.mark.parametrize(
    ("replaced", "replacement"),
    [
        (TRAIN_LABELS, np.zeros(4, dtype=np.uint8)),
        (TEST_IMAGES, np.zeros((3, 27, 28), dtype=np.uint8)),
        (TEST_IMAGES, np.zeros((3, 784), dtype=np.uint8)),
        (TEST_LABELS, np.zeros((3, 1), dtype=np.uint8)),
        (TRAIN_LABELS, np.zeros(5, dtype=np.int32)),
    ],
    ids=["count-mismatch", "27x28", "flat-images", "2d-labels", "int32-labels"],
)
def test_load_rejects_files_whose_header_is_not_the_canonical_one(tmp_path, tiny_fashion, replaced, replacement):
    directory = write_data_dir(tmp_path / "d", {**tiny_fashion, replaced: replacement})
    expected = datasets.FASHION_MNIST_FILES[replaced].dims
    with pytest.raises(ValueError, match=rf"{replaced}.gz: dims .* are not the canonical file's "
                                         rf"{re.escape(str(expected))} of uint8"):
        load_mnist(directory, kind="fashion-mnist")


def test_load_corrupt_file_error_names_it(tmp_path, tiny_fashion):
    directory = write_data_dir(tmp_path / "d", tiny_fashion)
    gz_path = directory / f"{TEST_IMAGES}.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:-30])
    with pytest.raises(ValueError, match="gzip") as excinfo:
        load_mnist(directory, kind="fashion-mnist")
    assert str(gz_path) in str(excinfo.value)


# ---------------------------------------------------------------------------------------------------------------------
# checksums


def test_mnist_checksum_mismatch_names_file_and_digests(tmp_path, monkeypatch):
    arrays = small_split_arrays()
    directory = write_data_dir(tmp_path / "d", arrays)
    real_md5 = datasets.MNIST_FILES[TRAIN_IMAGES].md5
    monkeypatch.setattr(datasets, "MNIST_FILES", {**canonical_files(arrays),
                                                  TRAIN_IMAGES: CanonicalFile((5, 28, 28), real_md5)})
    with pytest.raises(ValueError) as excinfo:
        load_mnist(directory)
    message = str(excinfo.value)
    assert str(directory / f"{TRAIN_IMAGES}.gz") in message
    assert f"expected {real_md5}" in message
    assert f"got {md5(idx_bytes(arrays[TRAIN_IMAGES]))}" in message


def test_mnist_checksum_is_of_uncompressed_content(tmp_path, tiny_mnist):
    """The same content under different gzip settings passes; one changed pixel does not."""
    directory = write_data_dir(tmp_path / "d", tiny_mnist, compress=(False, True, False, True))
    recompressed = gzip.compress(idx_bytes(tiny_mnist[TRAIN_LABELS]), compresslevel=1, mtime=12345)
    (directory / f"{TRAIN_LABELS}.gz").write_bytes(recompressed)
    assert load_mnist(directory).directory == directory

    changed = tiny_mnist[TEST_IMAGES].copy()
    changed[0, 0, 0] ^= 1
    (directory / TEST_IMAGES).write_bytes(idx_bytes(changed))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: MD5 mismatch"):
        load_mnist(directory)


def test_fashion_mnist_refuses_mnist_files(tmp_path, tiny_mnist, tiny_fashion):
    directory = write_data_dir(tmp_path / "d", tiny_mnist)
    with pytest.raises(ValueError, match="is the mnist file .* not fashion-mnist"):
        load_mnist(directory, kind="fashion-mnist")


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_fashion_mnist_local_file_with_a_flipped_label_byte_is_refused(tmp_path, tiny_fashion, compressed):
    """Fashion-MNIST is checked against its canonical digests wherever it comes from, a local directory too."""
    directory = write_data_dir(tmp_path / "d", tiny_fashion, compress=compressed)
    changed = tiny_fashion[TEST_LABELS].copy()
    changed[1] ^= 1
    path = directory / (f"{TEST_LABELS}.gz" if compressed else TEST_LABELS)
    path.write_bytes(gzip.compress(idx_bytes(changed)) if compressed else idx_bytes(changed))
    with pytest.raises(ValueError, match="MD5 mismatch") as excinfo:
        load_mnist(directory, kind="fashion-mnist")
    assert str(path) in str(excinfo.value)


def test_canonical_tables_describe_the_real_files():
    """Both tables: 60000 and 10000 rows of 28x28 images and their labels; the MNIST digests are the vendored
    files'. (The Fashion-MNIST files are not shipped; their digests were checked against Zalando's copy.)"""
    for table in (datasets.MNIST_FILES, datasets.FASHION_MNIST_FILES):
        assert {name: entry.dims for name, entry in table.items()} == {
            TRAIN_IMAGES: (60000, 28, 28), TRAIN_LABELS: (60000,), TEST_IMAGES: (10000, 28, 28),
            TEST_LABELS: (10000,)}
    for name, entry in datasets.MNIST_FILES.items():
        assert md5(gzip.decompress((REAL_VENDORED_MNIST_DIR / f"{name}.gz").read_bytes())) == entry.md5


# ---------------------------------------------------------------------------------------------------------------------
# search order


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (("explicit", "env_kind", "env", "vendored", "cache"), "explicit"),
        (("env_kind", "env", "vendored", "cache"), "env_kind"),
        (("env", "vendored", "cache"), "env"),
        (("vendored", "cache"), "vendored"),
        (("cache",), "cache"),
    ],
)
def test_search_order(tmp_path, monkeypatch, tiny_mnist, present, expected):
    env_root = tmp_path / "env"
    places = {
        "explicit": tmp_path / "explicit",
        "env_kind": env_root / "mnist",
        "env": env_root,
        "vendored": tmp_path / "vendored",
        "cache": user_cache_dir("mnist"),
    }
    monkeypatch.setenv("LINCLASS_DATA", str(env_root))
    monkeypatch.setattr(datasets, "VENDORED_MNIST_DIR", places["vendored"])
    for place in present:
        write_data_dir(places[place], tiny_mnist)

    data = load_mnist(places["explicit"] if "explicit" in present else None)

    assert data.directory == places[expected]
    np.testing.assert_array_equal(data.test_labels, tiny_mnist[TEST_LABELS])


def test_vendored_copy_is_not_used_for_fashion_mnist(tmp_path, monkeypatch, tiny_mnist):
    write_data_dir(tmp_path / "vendored", tiny_mnist)
    monkeypatch.setattr(datasets, "VENDORED_MNIST_DIR", tmp_path / "vendored")
    with pytest.raises(FileNotFoundError) as excinfo:
        load_mnist(kind="fashion-mnist", download=False)
    assert str(tmp_path / "vendored") not in str(excinfo.value)
    assert "vendored copy" not in str(excinfo.value)


def test_partial_directory_is_skipped_and_reported(tmp_path, monkeypatch, tiny_mnist):
    env_dir = write_data_dir(tmp_path / "env", {TRAIN_IMAGES: tiny_mnist[TRAIN_IMAGES]})
    monkeypatch.setenv("LINCLASS_DATA", str(env_dir))
    vendored = write_data_dir(tmp_path / "vendored", tiny_mnist)
    monkeypatch.setattr(datasets, "VENDORED_MNIST_DIR", vendored)
    assert load_mnist().directory == vendored


def test_explicit_dir_missing_files_is_an_error_naming_it(tmp_path, monkeypatch, tiny_mnist):
    monkeypatch.setenv("LINCLASS_DATA", str(write_data_dir(tmp_path / "env", tiny_mnist)))
    explicit = write_data_dir(tmp_path / "explicit", {TRAIN_IMAGES: tiny_mnist[TRAIN_IMAGES]})
    with pytest.raises(FileNotFoundError) as excinfo:
        load_mnist(explicit)
    message = str(excinfo.value)
    assert str(explicit) in message
    assert f"missing {TRAIN_LABELS}, {TEST_IMAGES}, {TEST_LABELS}" in message
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_mnist(tmp_path / "does-not-exist")


def test_offline_error_lists_every_place_and_how_to_supply(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv("LINCLASS_DATA", str(env_dir))
    unreachable = refused_url()
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (unreachable,))

    with pytest.raises(FileNotFoundError) as excinfo:
        load_mnist()

    message = str(excinfo.value)
    cache_dir = tmp_path / "cache" / "linclass_gpu" / "mnist"
    for place in (env_dir / "mnist", env_dir, datasets.VENDORED_MNIST_DIR, cache_dir):
        assert str(place) in message
    assert f"{unreachable}{TRAIN_IMAGES}.gz" in message
    assert "data_dir=" in message and "LINCLASS_DATA=" in message
    assert files_in(cache_dir) == []


def test_offline_error_without_download(monkeypatch):
    with pytest.raises(FileNotFoundError) as excinfo:
        load_mnist(kind="fashion-mnist", download=False)
    message = str(excinfo.value)
    assert "$LINCLASS_DATA: not set" in message
    assert str(user_cache_dir("fashion-mnist")) in message
    assert "download=False" in message


def test_user_cache_dir(tmp_path, monkeypatch):
    assert user_cache_dir("fashion-mnist") == tmp_path / "cache" / "linclass_gpu" / "fashion-mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "linclass_gpu" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "linclass_gpu" / "mnist"


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind 'emnist'"):
        load_mnist(kind="emnist")


# ---------------------------------------------------------------------------------------------------------------------
# download


def test_download_mnist_verifies_and_caches(monkeypatch, http_root, tiny_mnist):
    root, base_url, requested = http_root
    serve(root, "mnist", tiny_mnist)
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"{base_url}/mnist/",))
    cache_dir = user_cache_dir("mnist")

    data = load_mnist()

    assert data.directory == cache_dir
    np.testing.assert_array_equal(data.train_images.reshape(-1, 28, 28), tiny_mnist[TRAIN_IMAGES])
    assert files_in(cache_dir) == sorted(f"{name}.gz" for name in IDX_FILE_NAMES)  # no temporary files left
    assert len(requested) == 4

    assert load_mnist().directory == cache_dir
    assert len(requested) == 4  # the second load is served from the cache


def test_download_fashion_mnist_checks_canonical_digests(monkeypatch, http_root, tiny_fashion):
    root, base_url, _ = http_root
    serve(root, "fashion", tiny_fashion)
    monkeypatch.setattr(datasets, "FASHION_MNIST_MIRRORS", (f"{base_url}/fashion",))  # no trailing slash

    data = load_mnist(kind="fashion-mnist")

    assert data.directory == user_cache_dir("fashion-mnist")
    np.testing.assert_array_equal(data.test_labels, tiny_fashion[TEST_LABELS])
    for name in IDX_FILE_NAMES:
        assert (data.directory / f"{name}.gz").read_bytes() == (root / "fashion" / f"{name}.gz").read_bytes()


def test_download_larger_than_any_gzip_of_the_file_is_refused_unread(monkeypatch, http_root, tiny_mnist):
    root, base_url, _ = http_root
    serve(root, "huge", tiny_mnist)
    (root / "huge" / f"{TRAIN_IMAGES}.gz").write_bytes(b"\x1f\x8b" + bytes(1 << 20))
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"{base_url}/huge/",))
    limit = 4 + 4 * 3 + 5 * 28 * 28 + datasets._DOWNLOAD_SLACK_BYTES
    with pytest.raises(FileNotFoundError, match=f"{TRAIN_IMAGES}.gz: more than {limit} bytes"):
        load_mnist()
    assert files_in(user_cache_dir("mnist")) == []


def test_download_resumes_a_partial_cache(monkeypatch, http_root, tiny_mnist):
    root, base_url, requested = http_root
    serve(root, "mnist", tiny_mnist)
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"{base_url}/mnist/",))
    write_data_dir(user_cache_dir("mnist"), {TRAIN_IMAGES: tiny_mnist[TRAIN_IMAGES]})

    assert load_mnist().directory == user_cache_dir("mnist")
    assert sorted(requested) == sorted(f"/mnist/{name}.gz" for name in IDX_FILE_NAMES[1:])


def test_mirror_serving_wrong_bytes_is_rejected_and_leaves_nothing(monkeypatch, http_root, tiny_mnist):
    root, base_url, _ = http_root
    serve(root, "bad", small_split_arrays(seed=99))  # valid IDX, wrong content
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"{base_url}/bad/",))

    with pytest.raises(FileNotFoundError) as excinfo:
        load_mnist()

    message = str(excinfo.value)
    expected_md5 = datasets.MNIST_FILES[TRAIN_IMAGES].md5
    assert f"{base_url}/bad/{TRAIN_IMAGES}.gz: MD5 mismatch: expected {expected_md5}" in message
    assert files_in(user_cache_dir("mnist")) == []


def test_mirror_serving_corrupt_gzip_is_rejected(monkeypatch, http_root, tiny_mnist):
    root, base_url, _ = http_root
    serve(root, "broken", tiny_mnist)
    gz_path = root / "broken" / f"{TRAIN_IMAGES}.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:-100])
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"{base_url}/broken/",))

    with pytest.raises(FileNotFoundError, match="corrupt or truncated gzip stream"):
        load_mnist()
    assert files_in(user_cache_dir("mnist")) == []


@pytest.mark.parametrize("first_mirror", ["missing", "wrong-bytes", "refused"])
def test_second_mirror_is_tried_when_the_first_fails(monkeypatch, http_root, tiny_mnist, first_mirror):
    root, base_url, requested = http_root
    serve(root, "good", tiny_mnist)
    serve(root, "wrong-bytes", small_split_arrays(seed=99))
    first_url = refused_url() if first_mirror == "refused" else f"{base_url}/{first_mirror}/"
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (first_url, f"{base_url}/good/"))

    data = load_mnist()

    np.testing.assert_array_equal(data.train_labels, tiny_mnist[TRAIN_LABELS])
    assert files_in(data.directory) == sorted(f"{name}.gz" for name in IDX_FILE_NAMES)
    if first_mirror == "refused":
        assert all(path.startswith("/good/") for path in requested)
    else:
        assert requested[:2] == [f"/{first_mirror}/{TRAIN_IMAGES}.gz", f"/good/{TRAIN_IMAGES}.gz"]


# ---------------------------------------------------------------------------------------------------------------------
# the real vendored MNIST


def test_vendored_mnist(monkeypatch):
    monkeypatch.setattr(datasets, "VENDORED_MNIST_DIR", REAL_VENDORED_MNIST_DIR)

    data = load_mnist(download=False)

    assert data.directory == REAL_VENDORED_MNIST_DIR and data.kind == "mnist" and data.image_shape == (28, 28)
    assert data.train_images.shape == (60000, 784) and data.train_labels.shape == (60000,)
    assert data.test_images.shape == (10000, 784) and data.test_labels.shape == (10000,)
    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        assert images.min() == 0 and images.max() == 255
        np.testing.assert_array_equal(np.unique(labels), np.arange(10))
    # Known facts of the canonical files: the first training label is 5, the first test label is 7.
    assert data.train_labels[0] == 5 and data.test_labels[0] == 7


# ---------------------------------------------------------------------------------------------------------------------
# decompression bombs: declared sizes are checked before anything is inflated


@pytest.mark.parametrize(("images", "problem"), [
    (1_400_000, "more than a gzip file of 1048930 bytes can hold"),  # the reported case: 22 s and 1.1 GiB before
    (600_000, r"dims \(600000, 28, 28\) of uint8 are not the canonical file's \(60000, 28, 28\)"),
])
def test_load_mnist_refuses_a_header_declaring_other_dims_before_decompressing(tmp_path, images, problem):
    """A 1 MiB gzip declaring more images than MNIST's, its trailer agreeing, is refused from its header."""
    directory = write_data_dir(tmp_path / "d", small_split_arrays())
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", images, 28, 28)
    content = header + np.random.default_rng(0).bytes(1 << 20)  # incompressible: the gzip is 1 MiB
    path = directory / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(gzip_declaring(content, len(header) + images * 784))
    with pytest.raises(ValueError, match=problem) as info:
        load_mnist(directory)
    assert str(path) in str(info.value)
    assert peak_bytes_while(lambda: load_mnist(directory)) < 4 << 20
