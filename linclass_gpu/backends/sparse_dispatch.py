"""Which backend takes a feature matrix's rows: dense rows go where the estimator's ``backend`` says, sparse rows
(scipy, cupyx, torch) to :class:`.sparse_backend.SparseNumpyBackend` (every optimizer setting, on the CPU), to
:class:`.triton_sparse.TritonSparseBackend` when ``backend="triton"`` is asked for by name (plain SGD with L2 on the
device), or to :class:`.sparse_backend.SparseCupyBackend` when ``backend="cupy"`` is (every setting, cuSPARSE's
products). ``"auto"`` keeps the CPU step, the one measured so far.

Importing this module imports neither scipy nor the sparse backends: they load when sparse rows arrive.
"""

from __future__ import annotations

from typing import Any

from ..arrays import is_sparse_rows
from .base import Backend


def rows_backend(backend: Backend, X: Any, requested: str) -> Backend:
    """The backend that trains on and predicts from ``X``.

    Parameters
    ----------
    backend : Backend
        The one the estimator's ``backend`` parameter chose.
    X : array or scipy.sparse matrix, shape (N, D)
        Checked features (CSR when sparse: :func:`linclass_gpu.validation.check_features`).
    requested : str
        The estimator's ``backend`` parameter: ``"auto"`` lets sparse rows move to the CPU backend, ``"triton"``
        and ``"cupy"`` keep them on that backend's sparse step.

    Raises
    ------
    ValueError
        Sparse rows with a backend named explicitly that has no sparse step.
    """
    if not is_sparse_rows(X):
        return backend
    if backend.name == "triton" and requested == "triton":
        from .triton_sparse import TritonSparseBackend

        return TritonSparseBackend(deterministic=backend.deterministic, tf32=backend.tf32, device=backend.device)
    if backend.name == "cupy" and requested == "cupy":
        from .sparse_backend import SparseCupyBackend

        return SparseCupyBackend()
    if backend.name != "numpy" and requested != "auto":
        raise ValueError(f"sparse X trains on backend='numpy', 'triton' or 'cupy' only (the {backend.name} backend "
                         "has no sparse step); pass one of them or 'auto', or a dense array")
    from .sparse_backend import SparseNumpyBackend

    return SparseNumpyBackend()
