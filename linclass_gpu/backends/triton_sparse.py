"""Sparse rows (scipy CSR) on the Triton backend: the CSR arrays on the device, a step of two launches
(``kernels/sparse_sgd.py``) that reads and writes only the rows of ``W`` that the minibatch's nonzeros name.

Memory is O(nnz + D·K): ``X`` as its CSR arrays, ``W = s·V`` (D, K), the gradient buffer ``G`` (D, K), kept at zero
outside a step, and an int32 ``owner`` (D,) through which the update claims each touched row once per step. Nothing
of size B·D exists, and no host synchronisation happens inside a step.

On a CUDA device an epoch's launches are recorded once as a CUDA graph and replayed (``use_cuda_graph``;
:mod:`.triton_graph`): the scale ``s`` follows from the epoch's rates alone, so the host computes every step's
scalars (``s·x_scale``, ``lr/s``, ``lr``, the claim id) before the epoch into a table the kernels read. An epoch in
which ``|s|`` would leave its range (a fold of ``s`` into ``V`` mid-epoch) runs step by step instead.

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
from .triton_graph import GraphedEpochs, graph_applies

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

    Attributes
    ----------
    use_cuda_graph : bool or None
        Default None: on a CUDA device :meth:`run_epoch` replays the epoch from a CUDA graph; True also takes that
        path's static buffers under the interpreter (run eagerly: tests), False launches step by step.
    """

    use_cuda_graph: bool | None = None

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
        self._graphed_epochs = GraphedEpochs(torch, backend.device)
        self.set_params(W, b)

    # -- the step -----------------------------------------------------------------------------------------------------

    def step(self, rows: Any, learning_rate: float) -> None:
        if self.reducer is not None:
            raise ValueError("data-parallel training (a reducer) is not supported on sparse input")
        rows = self._row_ids(rows)
        logit_scale = self._scale * self.x_scale
        # W ← a·W − lr·dW with a = 1 − lr·l2: s ← a·s for every row at once, then V[j] ← V[j] − lr·dW[j]/s.
        factor = 1.0 - learning_rate * self.l2
        fold = not MIN_SCALE <= abs(self._scale * factor) <= 1.0 / MIN_SCALE
        self._launch_grad(rows, logit_scale=logit_scale)
        if fold:
            # Fold s and a into V (O(D·K), once in a long while; see sparse_step's lazy update).
            self._V.mul_(self._scale * factor)
            self._scale = 1.0
        else:
            self._scale *= factor
        self._reserve_step_ids(1)
        self._step_id += 1
        self._launch_update(rows, step=self._step_id, weight_step=learning_rate / self._scale,
                            bias_step=learning_rate)
        self._step_count += 1

    def _row_ids(self, rows: Any) -> Any:
        """The batch's row ids on the device, int32 or int64."""
        rows = self.backend.asarray(rows)
        return rows if rows.dtype in (self._torch.int32, self._torch.int64) else rows.to(self._torch.int64)

    def _launch_grad(self, rows: Any, **scalars: Any) -> None:
        """The step's gradient launch; ``scalars``: ``logit_scale``, or ``step_scalars`` (a table row)."""
        self._kernels.launch_sparse_sgd_grad(
            rows, self._indptr, self._indices, self._data, self._y, self._V, self.b, self._G, self._db,
            self._loss_sum, model=self.model, x_scale=self.x_scale, sample_weight=self._sample_weight, **scalars)

    def _launch_update(self, rows: Any, **scalars: Any) -> None:
        """The step's update launch; ``scalars``: ``step``, ``weight_step`` and ``bias_step``, or ``step_scalars``."""
        self._kernels.launch_sparse_sgd_update(
            rows, self._indptr, self._indices, self._V, self._G, self._owner, self.b, self._db,
            fit_intercept=self.fit_intercept, **scalars)

    def _reserve_step_ids(self, n_steps: int) -> None:
        """Make room for ``n_steps`` new claim ids: past :data:`MAX_STEP_ID` the ids start again at 1, after a reset
        of ``owner`` (an old id left there must never equal a new step's)."""
        if self._step_id + n_steps > MAX_STEP_ID:
            self._owner.zero_()
            self._step_id = 0

    # -- an epoch, replayed from a CUDA graph -------------------------------------------------------------------------

    def run_epoch(self, rows: Any, learning_rates: np.ndarray, batch_size: int, on_steps=None) -> None:
        """One epoch (see :meth:`.FusedSGD.run_epoch`): replayed from a CUDA graph where ``use_cuda_graph`` applies
        and the epoch's scale stays in range (its per-step scalars computed here, copied to the device once), else
        one :meth:`step` per minibatch."""
        table = self._epoch_scalars(learning_rates) if self._graph_applies() and len(learning_rates) else None
        if table is None:
            super().run_epoch(rows, learning_rates, batch_size, on_steps)
            return
        scalars, final_scale = table
        n_steps = len(learning_rates)

        def steps(rows_buffer, tables) -> None:
            for index in range(n_steps):
                batch_rows = rows_buffer[index * batch_size:(index + 1) * batch_size]
                row_scalars = tables["scalars"][index]
                self._launch_grad(batch_rows, step_scalars=row_scalars)
                self._launch_update(batch_rows, step_scalars=row_scalars)

        self._graphed_epochs.run(steps, self._row_ids(rows), {"scalars": scalars}, batch_size)
        self._scale = final_scale
        self._step_id += n_steps
        self._step_count += n_steps
        if on_steps is not None:
            on_steps(n_steps)

    def _graph_applies(self) -> bool:
        """Whether :meth:`run_epoch` goes through :class:`.GraphedEpochs` (see ``use_cuda_graph``)."""
        return graph_applies(self.use_cuda_graph, self.reducer, self.backend.device)

    def _epoch_scalars(self, learning_rates: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The epoch's table for the kernels (float32, (n_steps, ``sparse_sgd.STEP_SCALARS``): ``s·x_scale`` before
        the step, ``lr/s`` and ``lr`` after its L2 factor, the claim id's int32 bits) and the scale after the epoch,
        by :meth:`step`'s float64 arithmetic; None where ``|s|`` would leave its range (a fold mid-epoch)."""
        n_steps = len(learning_rates)
        self._reserve_step_ids(n_steps)
        table = np.zeros((n_steps, self._kernels.STEP_SCALARS), dtype=np.float32)
        scale = self._scale
        for index, learning_rate in enumerate(np.asarray(learning_rates, dtype=np.float64)):
            table[index, 0] = scale * self.x_scale
            factor = 1.0 - learning_rate * self.l2
            if not MIN_SCALE <= abs(scale * factor) <= 1.0 / MIN_SCALE:
                return None
            scale *= factor
            table[index, 1], table[index, 2] = learning_rate / scale, learning_rate
        table.view(np.int32)[:, 3] = self._step_id + 1 + np.arange(n_steps, dtype=np.int32)
        return table, scale

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
