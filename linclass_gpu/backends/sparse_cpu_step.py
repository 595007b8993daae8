"""The sparse step (:mod:`.sparse_step`) as one compiled loop (Numba): a run of minibatch steps on CSR rows per call.

A step on 128 hashed documents is half a millisecond of compiled loops (:mod:`.sparse_loops`) with a dozen Python
calls between them (the batch's nonzero count, its features, the products, the target indices, the row pass, the
gradient, the row update, the bias update), each costing dispatch and, for the gathers and buffers, an allocation.
:func:`sparse_train_steps_` runs those pieces for a run of steps in one call, on buffers sized once for the run's
largest batch, as :mod:`.cpu_step` does for dense rows. Each step calls the loops the Python step calls, with the
same arguments, so the arithmetic is the same: :class:`CompiledSparseFusedSGD` takes every step of the modes it runs
through it, one at a time or a run at once, so ``step`` and ``run_epoch`` give the same parameters bitwise.

It runs the two row-sparse modes of :func:`.update_mode`: plain SGD with L2 by the scale ``s`` of ``W = s·V``
(``"lazy"``, without L1: L1's per-row catch-up stays a Python step) and AdaGrad without penalties (``"rows"``). The
other settings move every row every step (``"dense"``), where a step's cost is its O(D·K) update, not its calls.

A call runs at most :data:`NONZERO_OUTPUTS_PER_CALL` nonzero-output products, so a progress bar moves and Ctrl-C
is seen (between calls) within a fraction of a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import ADAGRAD_EPS, ADAM_BETAS
from .cpu_loops import UPDATE_ADAGRAD, UPDATE_SGD, compiled, sigmoid_rows_, softmax_rows_, update_
from .cpu_step import run_in_calls
from .sparse_loops import adagrad_rows_, add_rows_, batch_columns_, batch_nonzeros, scatter_gradient_, sparse_products_
from .sparse_step import MIN_SCALE, SparseFusedSGD

# The most work one call of sparse_train_steps_ runs, in (nonzero, output) pairs: each is a multiply-add of the
# logits and one of the gradient, about 20 ms on one core for hashed documents with 20 classes.
NONZERO_OUTPUTS_PER_CALL = 2e7


@compiled
def sparse_train_steps_(indptr, indices, data, labels, binary_targets, sample_weight, rows, batch_size, rates, V, b,
                        accumulator_V, accumulator_b, slots, scale, loss_sum, softmax, squared_error, x_scale, l2,
                        adagrad, fit_intercept):
    """Run ``len(rates)`` sparse SGD steps: step ``t`` on the rows ``rows[t·B:(t+1)·B]`` with rate ``rates[t]``.

    Each step is :class:`.SparseFusedSGD`'s compiled step, piece for piece: the batch's distinct features
    (:func:`.batch_columns_`); ``P = X_b V`` (:func:`.sparse_products_`); the logits ``s·x_scale·P + b`` to
    ``x_scale·dZ``, ``db`` and the loss (:func:`.softmax_rows_` or :func:`.sigmoid_rows_`); ``dW_u = X_uᵀ dZ``
    (:func:`.scatter_gradient_`); the update of ``V[u]`` (AdaGrad: :func:`.adagrad_rows_`; plain SGD: ``s ← s·(1 −
    lr·l2)``, folded into ``V`` when ``|s|`` leaves ``[MIN_SCALE, 1/MIN_SCALE]``, then :func:`.add_rows_` by
    ``−lr/s``) and, with ``fit_intercept``, of ``b`` (:func:`.update_`, no penalty).

    Parameters
    ----------
    indptr, indices, data : ndarrays, shapes (N + 1,), (nnz,), (nnz,)
        X's CSR arrays, ``data`` in the compute dtype.
    labels, binary_targets, sample_weight, rows, batch_size, rates :
        As :func:`.cpu_step.train_steps_` takes them.
    V, b : ndarrays, shapes (D, K), (K,)
        The parameters, ``W = scale·V``.
    accumulator_V, accumulator_b : ndarrays, shapes (D, K), (K,), or (0, 0), (0,) for plain SGD
        AdaGrad's running ``Σ g²``.
    slots : int32 ndarray, shape (D,)
        :func:`.batch_columns_`'s scratch, −1 everywhere.
    scale : float
        ``s`` on entry.
    loss_sum : float64 ndarray, shape (1,)
        Each step's ``Σ_i w_i ℓ_i`` is added to it.
    softmax, squared_error : bool
        The model: softmax cross-entropy; else K sigmoids with binary cross-entropy or squared error.
    x_scale, l2 : float
        The input scale of ``z = x_scale·X W + b``; plain SGD's L2 (AdaGrad runs here only without it).
    adagrad : bool
        AdaGrad on the batch's rows; else plain SGD.
    fit_intercept : bool

    Returns
    -------
    float
        ``s`` after the run.
    """
    n_outputs = V.shape[1]
    n_run, n_steps = rows.shape[0], rates.shape[0]
    capacity = 0  # the run's largest batch, in nonzeros: every step's buffers fit in it
    for step in range(n_steps):
        capacity = max(capacity, batch_nonzeros(indptr, rows[step * batch_size:(step + 1) * batch_size]))
    u, local = np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.int64)
    gradient = np.empty((capacity, n_outputs), dtype=V.dtype)
    Z, db = np.empty((batch_size, n_outputs), dtype=V.dtype), np.empty(n_outputs, dtype=V.dtype)
    batch_labels = np.empty(batch_size if softmax else 0, dtype=np.int64)
    batch_targets = np.empty((0 if softmax else batch_size, n_outputs), dtype=V.dtype)
    batch_weights = np.empty(batch_size if sample_weight.size else 0, dtype=V.dtype)
    # Scalars are rounded to the compute dtype (V.dtype.type) where the Python step rounds them, so a float32 loop's
    # arithmetic stays float32.
    V_flat, no_velocity = V.reshape(-1), np.empty(0, dtype=V.dtype)
    optimizer = UPDATE_ADAGRAD if adagrad else UPDATE_SGD
    beta1, beta2 = ADAM_BETAS
    for step in range(n_steps):
        first = step * batch_size
        n_rows = min(batch_size, n_run - first)
        batch = rows[first:first + n_rows]
        n_distinct = batch_columns_(indptr, indices, batch, slots, u, local)
        z_batch = Z[:n_rows]
        sparse_products_(indptr, indices, data, batch, V, z_batch)
        for i in range(n_rows):
            if softmax:
                batch_labels[i] = i * n_outputs + labels[batch[i]]  # the flat index of row i's target logit
            else:
                batch_targets[i] = binary_targets[batch[i]]
            if sample_weight.size:
                batch_weights[i] = sample_weight[batch[i]]
        weights = batch_weights[:n_rows] if sample_weight.size else sample_weight
        logit_scale, dz_scale = V.dtype.type(scale * x_scale), V.dtype.type(x_scale)
        if softmax:
            loss_sum[0] += softmax_rows_(z_batch, batch_labels[:n_rows], weights, b, logit_scale, dz_scale, db)
        else:
            loss_sum[0] += sigmoid_rows_(z_batch, batch_targets[:n_rows], weights, b, logit_scale, dz_scale, db,
                                         squared_error)
        gradient_u = gradient[:n_distinct]
        scatter_gradient_(indptr, data, batch, local, z_batch, gradient_u)
        rate = rates[step]
        if adagrad:
            adagrad_rows_(V, accumulator_V, u[:n_distinct], gradient_u, V.dtype.type(rate), V.dtype.type(ADAGRAD_EPS))
        else:
            # W ← a·W − lr·dW with a = 1 − lr·l2: s ← a·s, then V[u] ← V[u] − lr·dW[u]/s (sparse_step's notes).
            factor = 1.0 - rate * l2
            if not MIN_SCALE <= abs(scale * factor) <= 1.0 / MIN_SCALE:
                for j in range(V_flat.size):  # fold s into V, then apply a to every row
                    V_flat[j] *= V.dtype.type(scale)
                for j in range(V_flat.size):
                    V_flat[j] *= V.dtype.type(factor)
                scale = 1.0
            else:
                scale *= factor
            add_rows_(V, u[:n_distinct], gradient_u, -rate / scale)
        if fit_intercept:
            update_(b, db, no_velocity, accumulator_b, rate, 0.0, 0.0, 0.0, False, optimizer, ADAGRAD_EPS, beta1, beta2,
                    1.0, 1.0)
    return scale


def runs_compiled(mode: str, l1: float) -> bool:
    """Whether :func:`sparse_train_steps_` runs a stepper's steps: the row-sparse modes, without L1."""
    return mode in ("lazy", "rows") and not l1


class CompiledSparseFusedSGD(SparseFusedSGD):
    """:class:`.SparseFusedSGD` on the compiled loops whose steps run in :func:`sparse_train_steps_` where it
    applies (:func:`runs_compiled`, no reducer); elsewhere the Python step over the same loops. The sparse NumPy
    backend's stepper when its compiled loops are on.
    """

    def __init__(self, backend, model, X, y, W, b, **settings):
        super().__init__(backend, model, X, y, W, b, **settings)
        self._runs = runs_compiled(self.mode, self.l1)
        self._mean_row_nonzeros = X.nnz / max(1, X.shape[0])

    def step(self, rows: Any, learning_rate: float) -> None:
        if not self._runs_here():
            super().step(rows, learning_rate)
            return
        self._train_steps(np.asarray(rows), np.array([learning_rate], dtype=np.float64), len(rows))

    def run_epoch(self, rows, learning_rates, batch_size, on_steps=None) -> None:
        if not self._runs_here():
            super().run_epoch(rows, learning_rates, batch_size, on_steps)
            return
        work_per_step = batch_size * self._mean_row_nonzeros * self.n_outputs
        run_in_calls(self._train_steps, rows, learning_rates, batch_size,
                     max(1, int(NONZERO_OUTPUTS_PER_CALL // max(1.0, work_per_step))), on_steps)

    def _runs_here(self) -> bool:
        """Whether the steps run compiled: the settings allow it and no reducer exchanges gradients between steps
        (the Python step refuses one by name)."""
        return self._runs and self.reducer is None

    def _train_steps(self, rows: np.ndarray, learning_rates: np.ndarray, batch_size: int) -> None:
        """:func:`sparse_train_steps_` over ``rows`` with this stepper's parameters, buffers and settings."""
        X, softmax, dtype = self._X, self.model == "softmax", self._V.dtype
        empty, empty_2d = np.empty(0, dtype=dtype), np.empty((0, 0), dtype=dtype)
        accumulator_V, accumulator_b = (empty_2d, empty) if self._accumulator[0] is None else self._accumulator
        self._step_count += len(learning_rates)
        self._scale = sparse_train_steps_(
            X.indptr, X.indices, X.data, self._y if softmax else np.empty(0, np.int64), empty_2d if softmax
            else self._y, empty if self._sample_weight is None else self._sample_weight, rows, batch_size,
            learning_rates, self._V, self.b, accumulator_V, accumulator_b, self._slots, self._scale,
            self._loss_sum.reshape(1), softmax, self.model == "sigmoid_mse", self.x_scale, self.l2,
            self.mode == "rows", self.fit_intercept)
