"""The NumPy backend that also takes scipy.sparse rows: CSR kept as CSR on the host, trained by
:class:`.sparse_step.SparseFusedSGD`, predicted by scipy's sparse-dense product. Dense arrays take the NumPy backend's
own paths unchanged, so an estimator can hand this backend either kind.

Memory is O(nnz + D·K): no operation forms a dense row block of ``X``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .array_backend import compute_dtype
from .numpy_backend import NumpyBackend
from .sparse_step import (
    SparseFusedSGD,
    as_csr,
    is_sparse,
    target_indices,
)


class SparseNumpyBackend(NumpyBackend):
    """:class:`.NumpyBackend` plus CSR rows (``scipy.sparse``; other formats converted to CSR once)."""

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A sparse matrix as a CSR array of ``dtype`` (its own float dtype when None, float32 for integers);
        anything else as :meth:`.NumpyBackend.asarray` places it."""
        if is_sparse(a):
            return as_csr(a, compute_dtype(a.dtype) if dtype is None else dtype)
        return super().asarray(a, dtype)

    def decision_function(self, X, W, b, x_scale=1.0):
        if not is_sparse(X):
            return super().decision_function(X, W, b, x_scale)
        dtype = compute_dtype(X.dtype)
        Z = np.ascontiguousarray(X @ np.asarray(W, dtype=dtype), dtype=dtype)
        if x_scale != 1.0:
            Z *= x_scale
        Z += np.asarray(b, dtype=dtype)
        return Z

    def _loss_grad(self, model, X, y, W, b, x_scale, sample_weight):
        if not is_sparse(X):
            return super()._loss_grad(model, X, y, W, b, x_scale, sample_weight)
        dtype = compute_dtype(X.dtype)
        X = as_csr(X, dtype)
        W, b = np.asarray(W, dtype=dtype), np.asarray(b, dtype=dtype)
        n_rows, n_outputs = X.shape[0], W.shape[1]
        targets = (target_indices(model, np.asarray(y, dtype=np.int64), n_outputs) if model == "softmax"
                   else self._sigmoid_targets(y, n_outputs, dtype))
        Z, db, loss_sum = np.ascontiguousarray(X @ W, dtype=dtype), np.empty_like(b), np.zeros((), dtype=np.float64)
        self.logits_to_grad_(model, Z, targets, self._weights(sample_weight, n_rows, dtype), b, float(x_scale),
                             loss_sum, db, float(x_scale))
        return float(loss_sum) / n_rows, np.asarray(X.T @ Z, dtype=dtype), db

    def fused_sgd(self, model, X, y, W, b, *, max_batch_size, l2=0.0, l1=0.0, momentum=0.0, nesterov=False,
                  fit_intercept=True, x_scale=1.0, sample_weight=None, optimizer="sgd"):
        """As :meth:`.Backend.fused_sgd`; sparse ``X`` gets :class:`.SparseFusedSGD`, whose buffers follow each
        batch's nonzeros, so ``max_batch_size`` sizes nothing there."""
        if not is_sparse(X):
            return super().fused_sgd(model, X, y, W, b, max_batch_size=max_batch_size, l2=l2, l1=l1,
                                     momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                                     x_scale=x_scale, sample_weight=sample_weight, optimizer=optimizer)
        dtype = compute_dtype(X.dtype)
        X = as_csr(X, dtype)
        y = (np.asarray(y, dtype=np.int64) if model == "softmax"
             else self._sigmoid_targets(y, np.shape(W)[1], dtype))
        return SparseFusedSGD(self, model, X, y, np.asarray(W), np.asarray(b), l2=l2, l1=l1, momentum=momentum,
                              nesterov=nesterov, fit_intercept=fit_intercept, x_scale=x_scale,
                              sample_weight=self._weights(sample_weight, X.shape[0], dtype), optimizer=optimizer)

    def describe(self) -> str:
        return super().describe() + ", scipy.sparse CSR rows"
