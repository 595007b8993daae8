"""Helpers shared by several test files: a test file imports these from here, never from another test file."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import tracemalloc
import zipfile

import numpy as np

# IDX type code of each dtype a test writes.
IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
                  np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Uncompressed IDX encoding of `array` (big-endian values, type code from its dtype)."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def gzip_declaring(content: bytes, declared_size: int) -> bytes:
    """``gzip.compress(content)`` with its ISIZE trailer rewritten to claim ``declared_size`` (mod 2**32)."""
    return gzip.compress(content)[:-4] + struct.pack("<I", declared_size % 2**32)


def peak_bytes_while(function) -> int:
    """Peak traced allocation (NumPy's arrays included) while ``function()`` runs, whatever ValueError it raises."""
    tracemalloc.start()
    try:
        with contextlib.suppress(ValueError):
            function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def blobs(rng, n=300, d=5, classes=3, spread=3.0):
    """Gaussian blobs around well-separated centres: an easy problem every fit must solve."""
    centres = rng.normal(scale=spread, size=(classes, d))
    y = rng.integers(0, classes, size=n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def stored_members(data: bytes) -> dict[str, np.ndarray]:
    """Every member of the .npz file whose bytes are ``data``, by name."""
    with np.load(io.BytesIO(data)) as stored:
        return {name: stored[name] for name in stored.files}


def write_members(path, members: dict, compression=zipfile.ZIP_STORED) -> None:
    """An .npz of ``members`` written member by member, as np.savez would (or compressed)."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, value in members.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=True)
            archive.writestr(f"{name}.npy", buffer.getvalue())


def awkward_csr(rng: np.random.Generator, n_rows: int, n_features: int, dtype=np.float64,
                nonzeros_per_row: int = 6):
    """A CSR matrix as users hand it over: empty rows, duplicate column indices within a row (which count summed)
    and unsorted indices (all three from a few rows on; a single row may be plain)."""
    import scipy.sparse

    lengths = rng.integers(0, 2 * nonzeros_per_row, n_rows)
    lengths[::5] = 0  # empty rows
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = rng.integers(0, n_features, indptr[-1])
    for row in range(0, n_rows, 3):  # a duplicate in every third row that has two entries
        start, end = indptr[row], indptr[row + 1]
        if end - start >= 2:
            indices[end - 1] = indices[start]
    data = rng.normal(size=indptr[-1])
    return scipy.sparse.csr_array((data.astype(dtype), indices.astype(np.int32), indptr), shape=(n_rows, n_features))


def model_targets(model: str, rng: np.random.Generator, n_rows: int, n_outputs: int) -> np.ndarray:
    """Class ids (N,) for the softmax, {0, 1} targets (N, K) for the sigmoid models."""
    if model == "softmax":
        return rng.integers(0, n_outputs, n_rows)
    return (rng.random((n_rows, n_outputs)) < 0.5).astype(np.float64)


def random_features(rng: np.random.Generator, n_rows: int, n_features: int, dtype: str):
    """Random kernel inputs in ``dtype``, as a CPU torch tensor, and the scale the kernels apply to them.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the values: one ``integers`` call for ``"uint8"``, one ``normal`` call otherwise.
    n_rows, n_features : int
        Shape of ``X``.
    dtype : str
        ``"uint8"`` or the name of a torch floating dtype (``"float32"``, ``"float16"``, ``"bfloat16"``).

    Returns
    -------
    X : torch.Tensor, shape (n_rows, n_features)
        Pixels 0..255 for ``"uint8"``, else standard normal values rounded from float32 to ``dtype``.
    x_scale : float
        1/255 for pixels (so the kernels see values in [0, 1]), else 1.
    """
    import torch  # here, so that the tests that do not need torch can import this module without it

    if dtype == "uint8":
        return torch.from_numpy(rng.integers(0, 256, size=(n_rows, n_features), dtype=np.uint8)), 1.0 / 255.0
    normal = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    return torch.from_numpy(normal).to(getattr(torch, dtype)), 1.0
