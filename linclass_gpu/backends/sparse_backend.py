"""The array backends that also take sparse rows: CSR kept as CSR, trained by :class:`.sparse_step.SparseFusedSGD`,
predicted by the sparse module's sparse-dense product. Dense arrays take the backend's own paths unchanged, so an
estimator can hand these backends either kind.

- :class:`SparseNumpyBackend`: scipy.sparse rows on the host (the compiled loops where Numba is installed, runs of
  steps in one call where they apply: :class:`.CompiledSparseFusedSGD`; scipy's products otherwise);
- :class:`SparseCupyBackend`: the rows copied once into a ``cupyx.scipy.sparse`` CSR matrix on the device, the
  products cuSPARSE's.

Memory is O(nnz + D·K): no operation forms a dense row block of ``X``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays import is_sparse_rows
from .array_backend import compute_dtype
from .cupy_backend import CupyBackend
from .numpy_backend import NumpyBackend
from .sparse_cpu_step import CompiledSparseFusedSGD
from .sparse_step import BatchGather, RowIndexGather, SparseFusedSGD, as_csr, target_indices


class SparseRows:
    """The sparse-rows methods shared by :class:`SparseNumpyBackend` and :class:`SparseCupyBackend`, over the
    backend's array module ``xp``; each places its CSR rows (:meth:`csr`) and picks its batch gather."""

    xp: Any

    def csr(self, X: Any, dtype: Any) -> Any:
        """``X`` (any sparse format or place: scipy, cupyx, torch) as this backend's CSR matrix of ``dtype``, checked
        by :func:`.as_csr`; one already in place is kept as it is."""
        raise NotImplementedError

    def batch_gather(self, X: Any) -> Any:
        """The gather of :class:`.SparseFusedSGD`'s scipy route over this backend's CSR ``X``, or None where the
        compiled loops read ``X`` in place."""
        raise NotImplementedError

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A sparse matrix as this backend's CSR matrix of ``dtype`` (its own float dtype when None, float32 for
        integers); anything else as the dense backend places it."""
        if is_sparse_rows(a):
            return self.csr(a, compute_dtype(a.dtype) if dtype is None else dtype)
        return super().asarray(a, dtype)

    def decision_function(self, X, W, b, x_scale=1.0):
        if not is_sparse_rows(X):
            return super().decision_function(X, W, b, x_scale)
        xp, dtype = self.xp, compute_dtype(X.dtype)
        Z = xp.ascontiguousarray(X @ xp.asarray(W, dtype=dtype), dtype=dtype)
        if x_scale != 1.0:
            Z *= x_scale
        Z += xp.asarray(b, dtype=dtype)
        return Z

    def _loss_grad(self, model, X, y, W, b, x_scale, sample_weight):
        if not is_sparse_rows(X):
            return super()._loss_grad(model, X, y, W, b, x_scale, sample_weight)
        xp, dtype = self.xp, compute_dtype(X.dtype)
        X = self.csr(X, dtype)
        W, b = xp.asarray(W, dtype=dtype), xp.asarray(b, dtype=dtype)
        n_rows, n_outputs = X.shape[0], W.shape[1]
        targets = (target_indices(model, xp.asarray(y, dtype=np.int64), n_outputs, xp) if model == "softmax"
                   else self._sigmoid_targets(y, n_outputs, dtype))
        Z, db, loss_sum = xp.ascontiguousarray(X @ W, dtype=dtype), xp.empty_like(b), xp.zeros((), dtype=np.float64)
        self.logits_to_grad_(model, Z, targets, self._weights(sample_weight, n_rows, dtype), b, float(x_scale),
                             loss_sum, db, float(x_scale))
        return float(loss_sum) / n_rows, xp.ascontiguousarray(X.T @ Z, dtype=dtype), db

    def fused_sgd(self, model, X, y, W, b, *, max_batch_size, l2=0.0, l1=0.0, momentum=0.0, nesterov=False,
                  fit_intercept=True, x_scale=1.0, sample_weight=None, optimizer="sgd"):
        """As :meth:`.Backend.fused_sgd`; sparse ``X`` gets :class:`.SparseFusedSGD`, whose buffers follow each
        batch's nonzeros, so ``max_batch_size`` sizes nothing there."""
        if not is_sparse_rows(X):
            return super().fused_sgd(model, X, y, W, b, max_batch_size=max_batch_size, l2=l2, l1=l1,
                                     momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                                     x_scale=x_scale, sample_weight=sample_weight, optimizer=optimizer)
        dtype = compute_dtype(X.dtype)
        X = self.csr(X, dtype)
        y = (self.xp.asarray(y, dtype=np.int64) if model == "softmax"
             else self._sigmoid_targets(y, np.shape(W)[1], dtype))
        gather = self.batch_gather(X)
        stepper = CompiledSparseFusedSGD if gather is None else SparseFusedSGD
        return stepper(self, model, X, y, np.asarray(W), np.asarray(b), l2=l2, l1=l1, momentum=momentum,
                       nesterov=nesterov, fit_intercept=fit_intercept, x_scale=x_scale,
                       sample_weight=self._weights(sample_weight, X.shape[0], dtype), optimizer=optimizer,
                       gather=gather)

    def describe(self) -> str:
        return super().describe() + ", sparse CSR rows"


class SparseNumpyBackend(SparseRows, NumpyBackend):
    """:class:`.NumpyBackend` plus CSR rows (``scipy.sparse``; other formats converted to CSR once)."""

    def csr(self, X: Any, dtype: Any) -> Any:
        return as_csr(X, dtype)  # keeps a checked scipy CSR array of that dtype as it is

    def batch_gather(self, X: Any) -> Any:
        return None if self.compiled else BatchGather(X)  # None: the compiled loops read X in place


class SparseCupyBackend(SparseRows, CupyBackend):
    """:class:`.CupyBackend` plus CSR rows: ``cupyx.scipy.sparse``, ``scipy.sparse`` or torch sparse matrices,
    checked on the host (one O(nnz) copy for a matrix already on the device) and kept as a cupyx CSR matrix."""

    def csr(self, X: Any, dtype: Any) -> Any:
        import cupyx.scipy.sparse

        if isinstance(X, cupyx.scipy.sparse.csr_matrix) and X.dtype == dtype:
            return X
        return cupyx.scipy.sparse.csr_matrix(as_csr(X, dtype))  # one host-to-device copy of the three CSR arrays

    def batch_gather(self, X: Any) -> Any:
        import cupyx.scipy.sparse

        return RowIndexGather(X, self.xp, cupyx.scipy.sparse)
