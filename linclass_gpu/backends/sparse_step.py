"""The fused SGD step on sparse rows (CSR: scipy's on the CPU, ``cupyx.scipy.sparse`` on a CUDA device): a step costs
O(nnz_batch·K), not O(D·K).

A bag-of-words of 100,000 documents over 2²⁰ hashed features is 400 GB dense and a few tens of MB as CSR; a step on
128 of its rows touches a few thousand of the 2²⁰ rows of ``W``. So the step below never forms a dense row nor a
dense ``dW``:

1. **Gather** the batch's rows from the CSR arrays (``indptr``, ``indices``, ``data``): O(nnz_batch), the matrix
   is never copied.
2. **Features of the batch**: the ``U`` distinct columns ``u`` that occur in it (a mark per feature, reset after
   use), and each nonzero's position in ``u``. The batch is then a (B, U) CSR matrix ``X_u`` and only ``W[u]``
   (U, K) takes part.
3. **Forward/backward**: ``Z = s·X_u W[u] + b``, the model's row losses and ``dZ`` as in the dense path (the
   backend's ``logits_to_grad_``), ``dW[u] = s·X_uᵀ dZ`` and ``db = Σ dZ`` (scipy's sparse-dense products; duplicate
   column indices of a row are summed, unsorted ones need no sorting).
4. **Update** of ``W[u]`` and the dense bias.

Where the backend runs compiled loops (Numba, :mod:`.sparse_loops`), steps 1–3 read X's CSR arrays through the row
ids and ``V`` in place, with no (B, U) matrix, no copy of ``W[u]`` and no scipy call, and the row-sparse updates
write ``V[u]`` in place: the same arithmetic, one pass each; :mod:`.sparse_cpu_step` runs a run of such steps in
one call.

The step is written against the backend's array module (``backend.xp``), so the CuPy backend runs the same code on
the device: its products are cuSPARSE's, through ``cupyx.scipy.sparse``, and its batches are gathered by
:class:`RowIndexGather` (sparse row indexing and a sort; :class:`BatchGather`'s scatter trick needs NumPy's
``repeat`` by an array).

Penalties without touching every row (plain SGD, no momentum). ``W`` is kept as ``W = s·V`` with a host scalar
``s``: the L2 step ``W ← (1 − lr·l2)·W − lr·dW`` is ``s ← s·(1 − lr·l2)`` (O(1)) and ``V[u] ← V[u] − lr·dW[u]/s``
(O(U·K)). When ``|s|`` leaves ``[MIN_SCALE, 1/MIN_SCALE]`` it is folded into ``V`` (O(D·K), rarely). L1's proximal step
``W ← sign(W)·max(|W| − lr·l1, 0)`` is, in ``V``'s units, a soft threshold by ``lr·l1/|s|``; soft thresholds compose
by adding their thresholds (``prox_a ∘ prox_b = prox_{a+b}``, the sign never flips), so the step adds its threshold
to a running total ``u_t`` and a row of ``V`` is brought up to date — thresholded by ``u_t − u_last`` — only when a
batch reads it (and at :meth:`~SparseFusedSGD.get_params`). Both are exact rewrites of the dense step, not
approximations (scikit-learn's cumulative L1 penalty, by contrast, clips against the *expected* penalty).

AdaGrad without penalties is also row-sparse: a feature outside the batch has ``g = 0``, so neither its ``G`` nor
its weight moves; only the batch's rows are updated.

Momentum (heavy ball, Nesterov), Adam, and AdaGrad with L1 or L2 move every row of ``W`` at every step (the velocity
of a row keeps moving its weight after the row has left the batch; Adam's moments decay; AdaGrad's L2 gradient and
L1 threshold are per entry). Momentum without L2 could be replayed lazily per row from running sums of the learning
rates, but with L2 the pair (weight, velocity) of an untouched row follows a 2×2 linear recurrence whose lazy form
divides by powers of an ill-conditioned matrix; so these take the exact dense update: the sparse gradient scattered
into a (D, K) buffer and the dense path's own update (:meth:`.ArrayBackend.sgd_update_`), O(D·K) per step.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse

from ..arrays import is_torch_sparse
from .array_backend import ArrayBackend, compute_dtype, soft_threshold_
from .base import ADAGRAD_EPS, MODELS, FusedSGD, check_optimizer
from .sparse_loops import adagrad_rows_, add_rows_, batch_columns_, batch_nonzeros, scatter_gradient_, sparse_products_

# The range [MIN_SCALE, 1/MIN_SCALE] of |s| in W = s·V outside which s is folded into V: V = W/s then grows or
# shrinks by at most 1e9, far inside the float32 range, and its rounding stays relative.
MIN_SCALE = 1e-9

# How each optimizer setting updates W: "lazy" (plain SGD, penalties by the scale and the running threshold),
# "rows" (AdaGrad without penalties: only the batch's rows move), "dense" (every row moves every step).
UPDATE_MODES = ("lazy", "rows", "dense")


def update_mode(optimizer: str, momentum: float, l2: float, l1: float) -> str:
    """Which of :data:`UPDATE_MODES` the step takes for these settings (see the module notes)."""
    if optimizer == "sgd" and not momentum:
        return "lazy"
    if optimizer == "adagrad" and not l2 and not l1:
        return "rows"
    return "dense"


def torch_sparse_to_scipy(X: Any) -> scipy.sparse.csr_array:
    """A torch sparse tensor (CSR, CSC or COO, on any device) as a scipy CSR array on the host: one O(nnz) copy of its
    index and value arrays (a CSR tensor's duplicate column indices stay, as in scipy; torch sums COO's)."""
    import torch

    if X.ndim != 2:
        raise ValueError(f"sparse X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    csr = X if X.layout == torch.sparse_csr else X.to_sparse_csr()
    values = csr.values().detach()
    if values.dtype == torch.bfloat16:  # NumPy has no bfloat16
        values = values.float()
    return scipy.sparse.csr_array((values.cpu().numpy(), csr.col_indices().cpu().numpy(),
                                   csr.crow_indices().cpu().numpy()), shape=tuple(csr.shape))


def as_csr(X: Any, dtype: Any, name: str = "X", n_features: int | None = None,
           estimator: str = "the model") -> scipy.sparse.csr_array:
    """``X`` (any scipy.sparse format, or a torch sparse tensor: :func:`torch_sparse_to_scipy`) checked, as a CSR
    array of ``dtype``: CSR of that dtype as it is, other formats and dtypes converted once.

    Duplicate column indices within a row are kept (the products sum them) and unsorted indices stay unsorted.

    Parameters
    ----------
    X : scipy.sparse or cupyx.scipy.sparse matrix or array, or torch sparse tensor, shape (N, D)
    dtype : numpy dtype
    name : str
        What to call ``X`` in messages.
    n_features : int, optional
        The feature count seen in ``fit``; a different one is an error.
    estimator : str
        Who saw that count, for the message.

    Raises
    ------
    ValueError
        ``X`` is not 2-D, is empty, holds NaN or infinity, or has the wrong number of features.
    TypeError
        ``X`` does not hold real numbers.
    """
    if is_torch_sparse(X):
        X = torch_sparse_to_scipy(X)
    elif type(X).__module__.startswith("cupyx."):  # checked on the host: one O(nnz) copy, as for torch's
        X = X.get()
    if X.ndim != 2:
        raise ValueError(f"sparse {name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"sparse {name} must hold real numbers, got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"sparse {name} is empty (shape={X.shape}) while a minimum of 1 sample and 1 feature is "
                         "required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but {estimator} is expecting {n_features} features as "
                         "input")
    csr = X if X.format == "csr" and isinstance(X, scipy.sparse.sparray) else scipy.sparse.csr_array(X)
    csr = csr.astype(dtype, copy=False)
    if not np.isfinite(csr.data).all():
        position = int(np.flatnonzero(~np.isfinite(csr.data))[0])
        row = int(np.searchsorted(csr.indptr, position, side="right") - 1)
        raise ValueError(f"sparse {name} contains NaN or infinity (first at row {row}, column "
                         f"{csr.indices[position]}: {csr.data[position]})")
    return csr


def set_rows(A: Any, rows: Any, values: Any) -> None:
    """``A[rows] = values`` for a C-contiguous (D, K) ``A`` and distinct ``rows``; a NumPy array's rows each moved as
    one K-value record (NumPy's row-wise fancy assignment moves it value by value, about twice as slow)."""
    if not isinstance(A, np.ndarray):  # a device array: one scatter kernel
        A[rows] = values
        return
    record = np.dtype((np.void, A.shape[1] * A.itemsize))
    A.view(record).reshape(-1)[rows] = np.ascontiguousarray(values, dtype=A.dtype).view(record).reshape(-1)


class BatchGather:
    """Gathers minibatches of a CSR matrix as (B, U) CSR matrices over the batch's own ``U`` distinct features.

    Parameters
    ----------
    X : scipy.sparse.csr_array, shape (N, D)
    """

    def __init__(self, X: scipy.sparse.csr_array):
        self.X = X
        self.n_features = X.shape[1]
        # Per feature, scratch for finding the batch's distinct features in O(nnz_batch) (see __call__); every entry
        # read in a batch was written in that batch, so it needs no reset.
        self._slots = np.zeros(self.n_features, dtype=np.int32)

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, scipy.sparse.csr_array]:
        """The batch ``X[rows]`` as ``(u, X_u)``.

        Parameters
        ----------
        rows : integer ndarray, shape (B,)

        Returns
        -------
        u : int ndarray, shape (U,)
            The distinct features of the batch (in no particular order).
        X_u : scipy.sparse.csr_array, shape (B, U)
            ``X[rows][:, u]``: column ``j`` of ``X_u`` is feature ``u[j]``.
        """
        indptr = self.X.indptr
        starts = indptr[rows]
        lengths = indptr[rows + 1] - starts
        batch_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=batch_indptr[1:])
        # Position in X's arrays of the batch's k-th nonzero: k plus the offset between its row's start in X and in
        # the batch.
        positions = np.repeat(starts - batch_indptr[:-1], lengths)
        positions += np.arange(batch_indptr[-1])
        features = self.X.indices[positions]
        # Distinct features in O(nnz_batch), without sorting nor scanning all D: each feature's slot receives one of
        # its positions k (whichever write lands last), so exactly one k per distinct feature finds itself there.
        order = np.arange(len(features), dtype=np.int32)
        self._slots[features] = order
        u = features[self._slots[features] == order]
        self._slots[u] = order[:len(u)]
        X_u = scipy.sparse.csr_array((self.X.data[positions], self._slots[features], batch_indptr),
                                     shape=(len(rows), len(u)))
        return u, X_u


class RowIndexGather:
    """:class:`BatchGather`'s ``(u, X_u)`` by whole-array operations any array module has: the batch's rows by sparse
    row indexing, its distinct features by a sort (``unique``), each nonzero's position among them by a binary search.
    O(nnz_batch·log nnz_batch); the CuPy backend's gather (on scipy CSR it serves the tests).

    Parameters
    ----------
    X : CSR matrix of ``sparse``, shape (N, D)
    xp : module
        NumPy or CuPy, whichever holds ``X``'s arrays.
    sparse : module
        ``scipy.sparse`` or ``cupyx.scipy.sparse``.
    """

    def __init__(self, X: Any, xp: Any, sparse: Any):
        self.X, self.xp, self._csr = X, xp, sparse.csr_matrix

    def __call__(self, rows: Any) -> tuple[Any, Any]:
        """The batch ``X[rows]`` as ``(u, X_u)``, as :meth:`BatchGather.__call__` (``u`` here sorted)."""
        xp = self.xp
        batch = self.X[rows]
        u = xp.unique(batch.indices)
        columns = xp.searchsorted(u, batch.indices).astype(batch.indices.dtype)
        return u, self._csr((batch.data, columns, batch.indptr), shape=(len(rows), len(u)))


def target_indices(model: str, y: Any, n_outputs: int, xp: Any = np) -> Any:
    """What :meth:`.ArrayBackend.logits_to_grad_` takes as ``targets`` for rows-major logits of rows with labels
    ``y`` (an array of ``xp``): flat target-logit indices ``i·K + y_i`` for the softmax, the {0, 1} targets
    themselves for the sigmoid models."""
    if model == "softmax":
        return xp.arange(len(y), dtype=np.int64) * n_outputs + y
    return y


class SparseFusedSGD(FusedSGD):
    """The fused SGD step over CSR rows (see the module notes for the cost of each setting).

    Parameters are those of :meth:`Backend.fused_sgd`, with ``X`` a CSR matrix where the backend keeps its rows
    (scipy's, from :func:`as_csr`, or its ``cupyx.scipy.sparse`` copy on the device), ``y`` int class ids (N,) for
    the softmax or {0, 1} targets (N, K) for the sigmoid models, arrays of ``backend.xp``, ``backend`` the
    :class:`.ArrayBackend` whose update rule (:meth:`~.ArrayBackend.sgd_update_`) and array module the step shares,
    and ``gather`` scipy's route's batch gather (:class:`BatchGather` or :class:`RowIndexGather` over ``X``), or
    None for the compiled loops (:mod:`.sparse_loops`, NumPy only), which read ``X`` in place.
    """

    def __init__(self, backend: ArrayBackend, model: str, X: Any, y: Any, W: np.ndarray, b: np.ndarray, *,
                 l2: float = 0.0, l1: float = 0.0, momentum: float = 0.0, nesterov: bool = False,
                 fit_intercept: bool = True, x_scale: float = 1.0, sample_weight: Any = None, optimizer: str = "sgd",
                 gather: Callable[[Any], tuple[Any, Any]] | None = None):
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        check_optimizer(optimizer, momentum, nesterov)
        if X.shape[1] != W.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features but W has {W.shape[0]} rows")
        self.backend, self.model, self.optimizer = backend, model, optimizer
        self.n_features, self.n_outputs = W.shape
        self.l2, self.l1 = float(l2), float(l1)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.fit_intercept, self.x_scale = bool(fit_intercept), float(x_scale)
        self.mode = update_mode(optimizer, momentum, l2, l1)
        dtype = compute_dtype(X.dtype)
        self.xp = xp = backend.xp
        # The compiled loops (sparse_loops) read X's CSR arrays through the row ids; scipy's route gathers the batch.
        self._compiled = gather is None
        self._X, self._gather = X, gather
        self._slots = np.full(self.n_features, -1, dtype=np.int32) if self._compiled else None
        self._y, self._sample_weight = y, sample_weight
        self._V = xp.array(W, dtype=dtype)  # W = s·V
        self.b = xp.array(b, dtype=dtype)
        self._scale = 1.0  # s
        self._threshold_total = 0.0  # u_t: the L1 thresholds of every step so far, in V's units
        self._threshold_applied = xp.zeros(self.n_features) if self.mode == "lazy" and self.l1 else None
        self._velocity = ((xp.zeros_like(self._V), xp.zeros_like(self.b)) if momentum or optimizer == "adam"
                          else (None, None))
        self._accumulator = ((xp.zeros_like(self._V), xp.zeros_like(self.b)) if optimizer != "sgd"
                             else (None, None))
        # The dense mode's (D, K) gradient and scratch; the other modes never allocate anything of that size.
        self._dense_grad = xp.zeros_like(self._V) if self.mode == "dense" else None
        self._dense_scratch = xp.empty_like(self._V) if self.mode == "dense" else None
        self._scratch_b = xp.empty_like(self.b)
        self._step_count = 0
        self._loss_sum = xp.zeros((), dtype=np.float64)

    # -- the step ---------------------------------------------------------------------------------------------

    def step(self, rows: Any, learning_rate: float) -> None:
        if self.reducer is not None:
            raise ValueError("data-parallel training (a reducer) is not supported on sparse input")
        rows = self.xp.asarray(rows)
        u, dW_u, db = self._compiled_loss_grad(rows) if self._compiled else self._batch_loss_grad(rows)
        self._step_count += 1
        adam_step = self._step_count if self.optimizer == "adam" else 0
        if self.mode == "lazy":
            self._lazy_update_(u, dW_u, learning_rate)
        elif self.mode == "rows" and self._compiled:
            real = self._V.dtype.type  # a float32 loop's arithmetic stays float32
            adagrad_rows_(self._V, self._accumulator[0], u, dW_u, real(learning_rate), real(ADAGRAD_EPS))
        elif self.mode == "rows":
            V_u, accumulator_u = self.xp.take(self._V, u, axis=0), self.xp.take(self._accumulator[0], u, axis=0)
            self.backend.sgd_update_(V_u, dW_u, None, self.xp.empty_like(V_u), learning_rate, 0.0, 0.0, False,
                                     accumulator=accumulator_u)
            set_rows(self._V, u, V_u)
            set_rows(self._accumulator[0], u, accumulator_u)
        else:
            self._dense_update_(u, dW_u, learning_rate, adam_step)
        if self.fit_intercept:  # the bias is never penalised
            self.backend.sgd_update_(self.b, db, self._velocity[1], self._scratch_b, learning_rate, 0.0,
                                     self.momentum, self.nesterov, accumulator=self._accumulator[1],
                                     adam_step=adam_step)

    def _batch_loss_grad(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(u, dW[u], db)`` of the batch ``rows`` by scipy's route (see the module notes); the batch's weighted
        summed loss is added to the loss sum."""
        xp = self.xp
        u, X_u = self._gather(rows)
        if self._threshold_applied is not None:
            self._catch_up_(u)
        Z = xp.ascontiguousarray(X_u @ xp.take(self._V, u, axis=0), dtype=self._V.dtype)
        db = self._logits_to_grad_(rows, Z)
        return u, xp.ascontiguousarray(X_u.T @ Z, dtype=self._V.dtype), db

    def _compiled_loss_grad(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_batch_loss_grad` by the compiled loops (:mod:`.sparse_loops`), reading ``V`` in place."""
        X = self._X
        n_nonzeros = batch_nonzeros(X.indptr, rows)
        u, local = np.empty(n_nonzeros, dtype=np.int64), np.empty(n_nonzeros, dtype=np.int64)
        u = u[:batch_columns_(X.indptr, X.indices, rows, self._slots, u, local)]
        if self._threshold_applied is not None:
            self._catch_up_(u)
        Z = np.empty((len(rows), self.n_outputs), dtype=self._V.dtype)
        sparse_products_(X.indptr, X.indices, X.data, rows, self._V, Z)
        db = self._logits_to_grad_(rows, Z)
        dW_u = np.empty((len(u), self.n_outputs), dtype=self._V.dtype)
        scatter_gradient_(X.indptr, X.data, rows, local, Z, dW_u)
        return u, dW_u, db

    def _logits_to_grad_(self, rows: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Turn the batch's ``X V`` (B, K) into ``x_scale·dZ`` in place (``dZ_i = w_i ∂ℓ_i/∂z_i / B`` of the logits
        ``s·x_scale·X V + b``), add the batch's weighted summed loss to the loss sum and return ``db = Σ_i dZ_i``."""
        db = self.xp.empty_like(self.b)
        self.backend.logits_to_grad_(self.model, Z, target_indices(self.model, self._y[rows], self.n_outputs, self.xp),
                                     None if self._sample_weight is None else self._sample_weight[rows], self.b,
                                     self._scale * self.x_scale, self._loss_sum, db, self.x_scale)
        return db

    def _lazy_update_(self, u: np.ndarray, dW_u: np.ndarray, learning_rate: float) -> None:
        """Plain SGD with L2 by the scale and L1 by the running threshold: O(U·K) (see the module notes)."""
        # W ← a·W − lr·dW with a = 1 − lr·l2: s ← a·s for every row at once, then V[u] ← V[u] − lr·dW[u]/s.
        factor = 1.0 - learning_rate * self.l2
        if not MIN_SCALE <= abs(self._scale * factor) <= 1.0 / MIN_SCALE:
            # Fold s into V and apply a to every row: exact, O(D·K), once in a long while (every step only when
            # lr·l2 ≈ 1, a = 0 included; |s| grows only when lr·l2 > 2, where SGD diverges anyway).
            self._fold_scale()
            self._V *= factor
        else:
            self._scale *= factor
        if self._compiled and self._threshold_applied is None:
            add_rows_(self._V, u, dW_u, -learning_rate / self._scale)
            return
        V_u = self.xp.take(self._V, u, axis=0)
        dW_u *= learning_rate / self._scale
        V_u -= dW_u
        if self._threshold_applied is not None:
            # W ← sign(W)·max(|W| − lr·l1, 0) is, in V = W/s, a soft threshold by lr·l1/|s|.
            threshold = learning_rate * self.l1 / abs(self._scale)
            self._threshold_total += threshold
            soft_threshold_(self.xp, V_u, threshold, dW_u)
            self._threshold_applied[u] = self._threshold_total
        set_rows(self._V, u, V_u)

    def _catch_up_(self, u: np.ndarray) -> None:
        """Apply to the rows ``u`` of ``V`` the L1 thresholds of the steps since each was last read."""
        V_u = self.xp.take(self._V, u, axis=0)
        pending = (self._threshold_total - self._threshold_applied[u]).astype(V_u.dtype)[:, None]
        soft_threshold_(self.xp, V_u, pending, self.xp.empty_like(V_u))
        set_rows(self._V, u, V_u)
        self._threshold_applied[u] = self._threshold_total

    def _fold_scale(self) -> None:
        """Make ``V`` the weights themselves: every row's pending threshold applied, ``V ← s·V``, ``s ← 1``."""
        if self._threshold_applied is not None:
            self._catch_up_all()
        self._V *= self._scale
        self._scale = 1.0

    def _catch_up_all(self) -> None:
        """Apply every row's pending L1 threshold; the running total then starts again from 0."""
        pending = (self._threshold_total - self._threshold_applied).astype(self._V.dtype)[:, None]
        soft_threshold_(self.xp, self._V, pending, self.xp.empty_like(self._V))
        self._threshold_total = 0.0
        self._threshold_applied[:] = 0.0

    def _dense_update_(self, u: np.ndarray, dW_u: np.ndarray, learning_rate: float, adam_step: int) -> None:
        """Momentum, Adam, or AdaGrad with penalties: the dense path's update on ``dW`` with the rows ``u`` set from
        ``dW_u`` and the others 0, O(D·K) (see the module notes)."""
        grad = self._dense_grad
        grad[...] = 0
        grad[u] = dW_u
        self.backend.sgd_update_(self._V, grad, self._velocity[0], self._dense_scratch, learning_rate, self.l2,
                                 self.momentum, self.nesterov, l1=self.l1, accumulator=self._accumulator[0],
                                 adam_step=adam_step)

    # -- the contract's bookkeeping -------------------------------------------------------------------------------

    def pop_loss_sum(self) -> float:
        loss_sum = float(self._loss_sum)
        self._loss_sum[...] = 0
        return loss_sum

    def get_params(self) -> tuple[np.ndarray, np.ndarray]:
        if self._threshold_applied is not None:
            self._catch_up_all()
        to_numpy = self.backend.to_numpy
        return to_numpy(self._V * self._V.dtype.type(self._scale)), to_numpy(self.b).copy()

    def set_params(self, W: np.ndarray, b: np.ndarray) -> None:
        self._V[...] = self.xp.asarray(W)
        self.b[...] = self.xp.asarray(b)
        self._scale, self._threshold_total = 1.0, 0.0
        if self._threshold_applied is not None:
            self._threshold_applied[:] = 0.0
        for buffer in self._velocity + self._accumulator:
            if buffer is not None:
                buffer[...] = 0
        self._step_count = 0

    def get_state(self) -> dict[str, np.ndarray]:
        W, b = self.get_params()
        state = {"W": W, "b": b}
        for prefix, buffers in (("velocity", self._velocity), ("accumulator", self._accumulator)):
            for param, suffix, buffer in zip((W, b), ("W", "b"), buffers):
                state[f"{prefix}_{suffix}"] = (np.zeros_like(param) if buffer is None
                                               else self.backend.to_numpy(buffer).copy())
        state["step_count"] = np.array(self._step_count, dtype=np.int64)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.set_params(state["W"], state["b"])  # zeroes the buffers: a key the state lacks stays 0
        for prefix, buffers in (("velocity", self._velocity), ("accumulator", self._accumulator)):
            for suffix, buffer in zip(("W", "b"), buffers):
                if buffer is not None and f"{prefix}_{suffix}" in state:
                    buffer[...] = self.xp.asarray(state[f"{prefix}_{suffix}"])
        self._step_count = int(state.get("step_count", 0))
