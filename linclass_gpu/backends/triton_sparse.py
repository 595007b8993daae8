"""Sparse rows (scipy CSR) on the Triton backend: the CSR arrays on the device, a step of two launches
(``kernels/sparse_sgd.py``) that reads and writes only the rows of ``W`` that the minibatch's nonzeros name.

Memory is O(nnz + D·K): ``X`` as its CSR arrays, ``W = s·V`` (D, K), the gradient buffer ``G`` (D, K), kept at zero
outside a step, and an int32 ``owner`` (D,) through which the update claims each touched row once per step. Nothing
of size B·D exists, and no host synchronisation happens inside a step.

Plain SGD with L2 (the lazy scale ``s`` of :mod:`.sparse_step`, a host scalar) is what the kernels do; momentum,
Nesterov, AdaGrad, Adam and L1 are refused by name (their sparse forms are the CPU step's :class:`.SparseFusedSGD`,
``backend="numpy"``), as are the deterministic reduction mode (the gradient is scattered by float atomics) and a
data-parallel reducer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays import is_sparse_rows
from .base import MODELS, FusedSGD, check_optimizer
from .sparse_backend import SparseNumpyBackend
from .sparse_step import MIN_SCALE, as_csr
from .triton_backend import TritonBackend

# Step ids claim rows in the int32 owner array; past the largest the ids start again at 1 and the array is reset.
MAX_STEP_ID = 2**31 - 1


class TritonSparseFusedSGD(FusedSGD):
    """The fused SGD step of :class:`TritonSparseBackend` over CSR rows held on the device (see the module notes).

    Parameters are those of :meth:`.Backend.fused_sgd`, with ``X`` a ``scipy.sparse`` matrix (converted to float32
    CSR once), ``y`` int class ids (N,) for the softmax or {0, 1} targets (N,) or (N, K) for the sigmoid models, host
    or device arrays, and ``backend`` the :class:`.TritonBackend` whose device and placement the step uses.

    Raises
    ------
    ValueError
        An option the sparse kernels lack: ``momentum``, ``nesterov``, ``optimizer`` other than ``"sgd"``, ``l1``,
        or the backend's deterministic mode.
    """

    def __init__(self, backend: TritonBackend, model: str, X: Any, y: Any, W: np.ndarray, b: np.ndarray, *,
                 l2: float = 0.0, l1: float = 0.0, momentum: float = 0.0, nesterov: bool = False,
                 fit_intercept: bool = True, x_scale: float = 1.0, sample_weight: Any = None, optimizer: str = "sgd"):
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        check_optimizer(optimizer, momentum, nesterov)
        for option, value, default in (("optimizer", optimizer, "sgd"), ("momentum", momentum, 0.0),
                                       ("nesterov", nesterov, False), ("l1", l1, 0.0),
                                       ("deterministic", backend.deterministic, False)):
            if value != default:
                raise ValueError(f"sparse X trains on backend='numpy' only with {option}={value!r} (the triton "
                                 "backend's sparse step is plain SGD with L2); pass backend='numpy' or 'auto', or "
                                 f"{option}={default!r}")
        W, b = np.asarray(W, dtype=np.float32), np.asarray(b, dtype=np.float32).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ValueError(f"W must be (D, K) and b (K,); got {W.shape} and {b.shape}")
        if X.shape[1] != W.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features but W has {W.shape[0]} rows")
        import torch

        from linclass_gpu.kernels import sparse_sgd

        self._torch, self._kernels = torch, sparse_sgd
        self.backend, self.model = backend, model
        self.n_features, self.n_outputs = W.shape
        self.l2, self.fit_intercept, self.x_scale = float(l2), bool(fit_intercept), float(x_scale)
        X = as_csr(X, np.float32)
        self._n_rows = X.shape[0]
        # int32 offsets while they fit (half the bytes); the kernels widen them to int64 before any product.
        self._indptr = backend.asarray(X.indptr, np.int32 if X.nnz < 2**31 else np.int64)
        self._indices = backend.asarray(X.indices, np.int32 if self.n_features < 2**31 else np.int64)
        self._data = backend.asarray(X.data, np.float32)
        self._y = backend._training_labels(model, y, self.n_outputs, self._n_rows)
        self._sample_weight = backend._weights(sample_weight, self._n_rows)
        self._V = torch.empty((self.n_features, self.n_outputs), dtype=torch.float32, device=backend.device)
        self.b = torch.empty(self.n_outputs, dtype=torch.float32, device=backend.device)
        self._G = torch.zeros_like(self._V)
        self._db = torch.zeros_like(self.b)
        self._owner = torch.zeros(self.n_features, dtype=torch.int32, device=backend.device)
        self._loss_sum = torch.zeros(1, dtype=torch.float64, device=backend.device)
        self._step_id = 0  # the last step's id in owner; 0 is never one
        self.set_params(W, b)

    # -- the step -----------------------------------------------------------------------------------------------------

    def step(self, rows: Any, learning_rate: float) -> None:
        if self.reducer is not None:
            raise ValueError("data-parallel training (a reducer) is not supported on sparse input")
        rows = self.backend.asarray(rows)
        if rows.dtype not in (self._torch.int32, self._torch.int64):
            rows = rows.to(self._torch.int64)
        self._kernels.launch_sparse_sgd_grad(
            rows, self._indptr, self._indices, self._data, self._y, self._V, self.b, self._G, self._db,
            self._loss_sum, model=self.model, logit_scale=self._scale * self.x_scale, x_scale=self.x_scale,
            sample_weight=self._sample_weight)
        # W ← a·W − lr·dW with a = 1 − lr·l2: s ← a·s for every row at once, then V[j] ← V[j] − lr·dW[j]/s.
        factor = 1.0 - learning_rate * self.l2
        if MIN_SCALE <= abs(self._scale * factor) <= 1.0 / MIN_SCALE:
            self._scale *= factor
        else:
            # Fold s and a into V (O(D·K), once in a long while; see sparse_step's lazy update).
            self._V.mul_(self._scale * factor)
            self._scale = 1.0
        if self._step_id == MAX_STEP_ID:
            self._owner.zero_()  # an old id left in owner must never equal a new step's
            self._step_id = 0
        self._step_id += 1
        self._kernels.launch_sparse_sgd_update(
            rows, self._indptr, self._indices, self._V, self._G, self._owner, self.b, self._db, step=self._step_id,
            weight_step=learning_rate / self._scale, bias_step=learning_rate, fit_intercept=self.fit_intercept)
        self._step_count += 1

    # -- the contract's bookkeeping -----------------------------------------------------------------------------------

    def pop_loss_sum(self) -> float:
        loss_sum = float(self._loss_sum.item())  # the one device-to-host read of an epoch
        self._loss_sum.zero_()
        return loss_sum

    def get_params(self) -> tuple[np.ndarray, np.ndarray]:
        W = self.backend.to_numpy(self._V)
        return W * W.dtype.type(self._scale), self.backend.to_numpy(self.b).copy()

    def set_params(self, W: np.ndarray, b: np.ndarray) -> None:
        self._V.copy_(self.backend.asarray(np.asarray(W, dtype=np.float32).reshape(self._V.shape)))
        self.b.copy_(self.backend.asarray(np.asarray(b, dtype=np.float32).reshape(-1)))
        self._scale = 1.0
        # A step cut short between its two launches leaves its gradient behind: start again from zero.
        self._G.zero_()
        self._db.zero_()
        self._step_count = 0

    def get_state(self) -> dict[str, np.ndarray]:
        W, b = self.get_params()
        return {"W": W, "b": b, "velocity_W": np.zeros_like(W), "velocity_b": np.zeros_like(b),
                "accumulator_W": np.zeros_like(W), "accumulator_b": np.zeros_like(b),
                "step_count": np.array(self._step_count, dtype=np.int64)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.set_params(state["W"], state["b"])  # plain SGD: the velocity and accumulator are zeros
        self._step_count = int(state.get("step_count", 0))


class TritonSparseBackend(TritonBackend):
    """:class:`.TritonBackend` plus CSR rows (``scipy.sparse``; other formats converted to CSR once): trained by
    :class:`TritonSparseFusedSGD`, predicted by scipy's sparse-dense product on the host. Dense arrays take the
    Triton backend's own paths unchanged."""

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A sparse matrix as a float32 CSR array on the host (the step moves its arrays to the device once; the
        kernels compute in float32 whatever ``dtype`` says); anything else as :meth:`.TritonBackend.asarray` places it.
        """
        if is_sparse_rows(a):
            return as_csr(a, np.float32)
        return super().asarray(a, dtype)

    def decision_function(self, X, W, b, x_scale=1.0):
        """Logits on the device; of sparse rows by :class:`.SparseNumpyBackend`'s scipy product on the host (the
        estimators read the logits on the host anyway), placed on the device."""
        if not is_sparse_rows(X):
            return super().decision_function(X, W, b, x_scale)
        return self.asarray(SparseNumpyBackend().decision_function(as_csr(X, np.float32), np.asarray(W, np.float32),
                                                                   np.asarray(b, np.float32), x_scale))

    def fused_sgd(self, model, X, y, W, b, *, max_batch_size, l2=0.0, l1=0.0, momentum=0.0, nesterov=False,
                  fit_intercept=True, x_scale=1.0, sample_weight=None, optimizer="sgd"):
        """As :meth:`.Backend.fused_sgd`; sparse ``X`` gets :class:`TritonSparseFusedSGD`, whose buffers do not depend
        on the batch, so ``max_batch_size`` sizes nothing there."""
        if not is_sparse_rows(X):
            return super().fused_sgd(model, X, y, W, b, max_batch_size=max_batch_size, l2=l2, l1=l1,
                                     momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept,
                                     x_scale=x_scale, sample_weight=sample_weight, optimizer=optimizer)
        return TritonSparseFusedSGD(self, model, X, y, W, b, l2=l2, l1=l1, momentum=momentum, nesterov=nesterov,
                                    fit_intercept=fit_intercept, x_scale=x_scale, sample_weight=sample_weight,
                                    optimizer=optimizer)

    def describe(self) -> str:
        return super().describe() + ", scipy.sparse CSR rows"
