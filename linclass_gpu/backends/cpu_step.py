"""The NumPy backend's fused step as one compiled loop (Numba): a run of minibatch steps per call.

Where the step's products are the compiled ones (:func:`.cpu_products.products_pay`), every piece of a step is a
compiled loop, and what is left between them is Python: about ten calls per step (the gathers, the conversion of the
rows, the target indices, the two products, the row pass, two updates), each a microsecond or more of dispatch, about
a tenth of an MNIST step (B = 128, D = 784, C = 10). :func:`train_steps_` runs the same pieces for a run of steps in
one call, as JAX's ``lax.scan`` or the Triton backend's epoch kernel does: the row gather converts as it copies, W
stays in the products' transposed layout for the whole run (the Python step transposes it in and out every step),
and each step calls the loops of :mod:`.cpu_products` and :mod:`.cpu_loops` on the values the Python step gives
them, so the arithmetic is the same. :class:`CompiledFusedSGD` takes every step through it, one at a time or a run at
once, so ``step`` and ``run_epoch`` give the same parameters bitwise.

Where the CPU has AMX-BF16 and X holds integers of at most 8 bits (uint8 pixels) with a float32 compute dtype, the
run takes its two products on tiles instead (:mod:`.cpu_amx`; ``LINCLASS_GPU_AMX=0`` turns them off): the gather
writes the rows as bfloat16, W and dZ are cut into bfloat16 parts each step, and the results agree with the loops'
within float32 rounding, not bit for bit. ``step`` and ``run_epoch`` still give the same bits, both going through the
tiles.

A call runs at most :data:`FLOPS_PER_CALL` of products, so a progress bar moves and Ctrl-C is seen (between calls)
within a fraction of a second on a large problem.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .array_backend import ArrayFusedSGD
from .base import ADAGRAD_EPS, ADAM_BETAS, ADAM_EPS, adam_bias_corrections
from .cpu_amx import (
    AMX_MAX_OUTPUTS,
    N_PARTS,
    TILE_PAIRS,
    amx_enabled,
    exact_in_bfloat16,
    gather_rows_,
    logits_product_amx_,
    pack_coefficient_parts_,
    pack_weight_parts_,
    padded,
    tile_configs,
    weight_gradient_product_amx_,
)
from .cpu_loops import UPDATE_ADAGRAD, UPDATE_ADAM, UPDATE_SGD, compiled, sigmoid_rows_, softmax_rows_, update_
from .cpu_products import (
    logits_product_t_,
    products_pay,
    transpose_into,
    transposed_shape,
    weight_gradient_product_t_,
)

# The most product work one call of train_steps_ runs (2 GEMMs of 2·B·D·C flops a step): about 20 ms on one core.
FLOPS_PER_CALL = 1e9


@compiled
def train_steps_(X, labels, binary_targets, sample_weight, rows, batch_size, rates, corrections, W, b,
                 velocity_W, velocity_b, accumulator_W, accumulator_b, x_rows, batch_labels, batch_targets,
                 batch_weights, Z, db, loss_sum, softmax, squared_error, x_scale, one, l2, l1, momentum,
                 nesterov, optimizer, eps, beta1, beta2, fit_intercept, amx, logits_config, gradient_config):
    """Run ``len(rates)`` SGD steps: step ``t`` on the rows ``rows[t·B:(t+1)·B]`` with rate ``rates[t]``.

    Each step is :class:`.ArrayFusedSGD`'s, piece for piece: gather (and convert) the rows, their targets and
    weights; ``Z = X_b W`` (:func:`.logits_product_t_`); ``Z`` to ``dZ``, ``db`` and the loss
    (:func:`.softmax_rows_` or :func:`.sigmoid_rows_`); ``dW = Xᵀ dZ`` (:func:`.weight_gradient_product_t_`), the
    input scale on the smaller of dZ and dW (as :func:`.linear_loss_grad_` puts it); the update of W with L2 and L1
    and, with ``fit_intercept``, of b without them (:func:`.update_`).

    Parameters
    ----------
    X : ndarray, shape (N, D), float or integer
        The features as given; rows are converted to ``x_rows``' dtype as they are gathered.
    labels : int ndarray, shape (N,) for the softmax, (0,) otherwise
    binary_targets : ndarray, shape (N, K) of {0, 1} in the compute dtype for the sigmoid models, (0, 0) otherwise
    sample_weight : ndarray, shape (N,) or (0,) (every row weighs 1), compute dtype
    rows : int ndarray, shape (N_run,)
    batch_size : int
        ``B``; the last step takes the ``N_run mod B`` rows left, when that is not 0.
    rates : float64 ndarray, shape (S,)
    corrections : float64 ndarray, shape (S, 2)
        Adam's ``(1 − β₁ᵗ, √(1 − β₂ᵗ))`` for each step (computed on the host as the Python step does); unused
        otherwise.
    W, b, velocity_W, velocity_b, accumulator_W, accumulator_b : ndarray
        The parameters (D, K), (K,) and their optimizer buffers of the same shapes, or (0, 0) and (0,) when absent.
    x_rows, batch_labels, batch_targets, batch_weights, Z, db : ndarray
        The step's buffers: (B, D), (B,), (B, K), (B,) or (0,), (B, K), (K,).
    loss_sum : float64 ndarray, shape (1,)
        Each step's ``Σ_i w_i ℓ_i`` is added to it.
    softmax, squared_error : bool
        The model: softmax cross-entropy; else K sigmoids with binary cross-entropy or squared error.
    x_scale, one : float, compute dtype
        The input scale ``s`` of ``z = s·X W + b`` and ``dW = s·Xᵀ dZ``; 1 (a literal 1 would be float64 in a
        float32 loop's arithmetic).
    l2, l1, momentum, nesterov, optimizer, eps, beta1, beta2 :
        :func:`.update_`'s settings (``optimizer`` one of its codes).
    fit_intercept : bool
    amx : bool
        Run the products on AMX tiles (:mod:`.cpu_amx`: float32, X of integers of at most 8 bits, C ≤ 16) instead
        of :mod:`.cpu_products`' loops.
    logits_config, gradient_config : uint8 ndarray, shape (64,)
        :func:`.tile_configs` for C outputs (read with ``amx`` only).
    """
    n_features, n_outputs = W.shape
    n_run = rows.shape[0]
    # W, dW and W's optimizer buffers are held transposed for the run (the products' layout: each output's D values
    # contiguous), so no step transposes them; the update is per entry, so its layout does not change a value. The
    # tiles read whole blocks of 64 features: their rows are padded with zeros, which the update keeps at 0.
    width = padded(n_features) if amx else n_features
    weights_t = np.zeros(transposed_shape(width, n_outputs), dtype=W.dtype)
    transpose_into(W, weights_t)
    gradient_t = np.zeros(transposed_shape(width, n_outputs), dtype=W.dtype)
    velocity_t = np.zeros((n_outputs, width) if velocity_W.size else (0, 0), dtype=W.dtype)
    accumulator_t = np.zeros((n_outputs, width) if accumulator_W.size else (0, 0), dtype=W.dtype)
    if velocity_W.size:
        transpose_into(velocity_W, velocity_t)
    if accumulator_W.size:
        transpose_into(accumulator_W, accumulator_t)
    # The tiles' operands (:mod:`.cpu_amx`), empty without them.
    tile_rows, tile_width, tile_outputs = (padded(batch_size), width, weights_t.shape[0]) if amx else (0, 0, 0)
    x_bits = np.zeros((tile_rows, tile_width), dtype=np.uint16)
    x_pairs = np.zeros((tile_rows // 2, tile_width), dtype=np.uint32)
    weight_parts = np.zeros((N_PARTS, tile_width // 2, TILE_PAIRS), dtype=np.uint32)
    weight_codes = np.zeros((N_PARTS, tile_outputs, tile_width), dtype=np.uint16)
    coefficient_parts = np.zeros((N_PARTS, tile_outputs, tile_rows), dtype=np.uint16)
    Z16 = np.empty((tile_rows, TILE_PAIRS), dtype=np.float32)
    flat_W, flat_dW = weights_t[:n_outputs].reshape(-1), gradient_t[:n_outputs].reshape(-1)
    flat_velocity_W, flat_accumulator_W = velocity_t.reshape(-1), accumulator_t.reshape(-1)
    for step in range(rates.shape[0]):
        first = step * batch_size
        n_rows = min(batch_size, n_run - first)
        if amx:
            gather_rows_(X, rows[first:first + n_rows], n_rows, x_bits, x_pairs)
        for i in range(n_rows):
            row = rows[first + i]
            if not amx:
                source, target = X[row], x_rows[i]
                for j in range(n_features):
                    target[j] = source[j]
            if softmax:
                batch_labels[i] = labels[row] + i * n_outputs  # the flat index of row i's target logit
            else:
                batch_targets[i] = binary_targets[row]
            if sample_weight.size:
                batch_weights[i] = sample_weight[row]
        x_batch, z_batch = x_rows[:n_rows], Z[:n_rows]
        scale_dz = x_scale != one and n_rows * n_outputs < W.size
        weights = batch_weights[:n_rows] if sample_weight.size else sample_weight
        if amx:
            pack_weight_parts_(weights_t, n_outputs, weight_codes, weight_parts)
            logits_product_amx_(x_bits, weight_parts, Z16, logits_config)
            for i in range(n_rows):
                for k in range(n_outputs):
                    z_batch[i, k] = Z16[i, k]
        else:
            logits_product_t_(x_batch, weights_t, z_batch)
        if softmax:
            loss_sum[0] += softmax_rows_(z_batch, batch_labels[:n_rows], weights, b, x_scale,
                                         x_scale if scale_dz else one, db)
        else:
            loss_sum[0] += sigmoid_rows_(z_batch, batch_targets[:n_rows], weights, b, x_scale,
                                         x_scale if scale_dz else one, db, squared_error)
        if amx:
            pack_coefficient_parts_(z_batch, coefficient_parts)
            weight_gradient_product_amx_(coefficient_parts, x_pairs, gradient_t, gradient_config)
        else:
            weight_gradient_product_t_(x_batch, z_batch, gradient_t)
        if x_scale != one and not scale_dz:
            for k in range(flat_dW.size):
                flat_dW[k] *= x_scale
        rate, correction1, correction2_sqrt = rates[step], corrections[step, 0], corrections[step, 1]
        update_(flat_W, flat_dW, flat_velocity_W, flat_accumulator_W, rate, l2, l1, momentum, nesterov, optimizer,
                eps, beta1, beta2, correction1, correction2_sqrt)
        if fit_intercept:
            update_(b, db, velocity_b, accumulator_b, rate, 0.0, 0.0, momentum, nesterov, optimizer, eps, beta1,
                    beta2, correction1, correction2_sqrt)
    transpose_into(weights_t[:n_outputs, :n_features], W)
    if velocity_W.size:
        transpose_into(velocity_t[:, :n_features], velocity_W)
    if accumulator_W.size:
        transpose_into(accumulator_t[:, :n_features], accumulator_W)


def compiles(X: Any, n_outputs: int) -> bool:
    """Whether :func:`train_steps_` reads ``X``: a NumPy array of a dtype Numba compiles for (not float16), with at
    least one output."""
    return isinstance(X, np.ndarray) and X.dtype.kind in "uif" and X.dtype != np.float16 and n_outputs > 0


def run_in_calls(train_steps: Callable[[np.ndarray, np.ndarray, int], None], rows: Any, learning_rates: Any,
                 batch_size: int, steps_per_call: int, on_steps: Callable[[int], None] | None) -> None:
    """An epoch (:meth:`.FusedSGD.run_epoch`'s arguments) as calls of ``train_steps(rows, rates, batch_size)`` on
    ``steps_per_call`` steps each, ``on_steps`` told after each call."""
    learning_rates = np.asarray(learning_rates, dtype=np.float64)
    for first in range(0, len(learning_rates), steps_per_call):
        last = min(first + steps_per_call, len(learning_rates))
        train_steps(rows[first * batch_size:last * batch_size], learning_rates[first:last], batch_size)
        if on_steps is not None:
            on_steps(last - first)


class CompiledFusedSGD(ArrayFusedSGD):
    """:class:`.ArrayFusedSGD` whose steps run in :func:`train_steps_` wherever it reads X (:func:`compiles`), the
    compiled products pay for the batch's shape and no reducer exchanges gradients between steps; elsewhere the
    array step (BLAS products). The NumPy backend's stepper when its compiled loops are on.
    """

    def __init__(self, backend, model, X, y, W, b, **settings):
        super().__init__(backend, model, X, y, W, b, **settings)
        self._compiles = compiles(X, self.n_outputs)
        self._amx = (amx_enabled() and exact_in_bfloat16(X.dtype) and self.W.dtype == np.float32
                     and self.n_outputs <= AMX_MAX_OUTPUTS)
        self._tile_configs = tile_configs(min(self.n_outputs, AMX_MAX_OUTPUTS))

    def step(self, rows: Any, learning_rate: float) -> None:
        self._run(rows, np.array([learning_rate], dtype=np.float64), rows.shape[0])

    def run_epoch(self, rows, learning_rates, batch_size, on_steps=None) -> None:
        run_in_calls(self._run, rows, learning_rates, batch_size,
                     max(1, int(FLOPS_PER_CALL // (4.0 * batch_size * self.n_features * self.n_outputs))), on_steps)

    def _run(self, rows: np.ndarray, learning_rates: np.ndarray, batch_size: int) -> None:
        """Steps with ``learning_rates`` over ``rows`` in batches of ``batch_size``: the compiled loop for those whose
        shape it pays for, the array step for the rest (a short last batch, or all of them)."""
        n_steps = len(learning_rates)
        if not self._compiles or self.reducer is not None or not products_pay(batch_size, self.n_features,
                                                                              self.n_outputs):
            n_compiled = 0
        else:
            last_batch = len(rows) - (n_steps - 1) * batch_size
            n_compiled = n_steps - (not products_pay(last_batch, self.n_features, self.n_outputs))
        if n_compiled:
            self._train_steps(rows[:n_compiled * batch_size], learning_rates[:n_compiled], batch_size)
        for index in range(n_compiled, n_steps):
            super().step(rows[index * batch_size:(index + 1) * batch_size], float(learning_rates[index]))

    def _train_steps(self, rows: np.ndarray, learning_rates: np.ndarray, batch_size: int) -> None:
        """:func:`train_steps_` over ``rows`` with this stepper's parameters, buffers and settings."""
        real, softmax = self.W.dtype.type, self.model == "softmax"
        n_steps = len(learning_rates)
        # Adam's corrections as the Python step computes them (Python's power; NumPy's may differ in the last bit).
        corrections = np.array([adam_bias_corrections(self._step_count + 1 + step) for step in range(n_steps)]
                               if self.optimizer == "adam" else np.ones((n_steps, 2)), dtype=np.float64)
        self._step_count += n_steps
        optimizer = {"sgd": UPDATE_SGD, "adagrad": UPDATE_ADAGRAD, "adam": UPDATE_ADAM}[self.optimizer]
        empty, empty_2d = np.empty(0, dtype=real), np.empty((0, 0), dtype=real)
        velocity_W, velocity_b = (empty_2d, empty) if self._velocity[0] is None else self._velocity
        accumulator_W, accumulator_b = (empty_2d, empty) if self._accumulator[0] is None else self._accumulator
        train_steps_(
            self._X, self._y if softmax else np.empty(0, np.int64),
            empty_2d if softmax else self._y, empty if self._sample_weight is None
            else self._sample_weight, rows, batch_size, learning_rates, corrections, self.W, self.b, velocity_W,
            velocity_b, accumulator_W, accumulator_b, self._rows, self._targets if softmax else np.empty(0, np.int64),
            empty_2d if softmax else self._targets, empty if self._weights is None else self._weights,
            self._Z, self._db, self._loss_sum.reshape(1), softmax, self.model == "sigmoid_mse",
            real(self.x_scale), real(1.0), self.l2, self.l1, self.momentum, self.nesterov, optimizer,
            ADAM_EPS if self.optimizer == "adam" else ADAGRAD_EPS, *ADAM_BETAS, self.fit_intercept, self._amx,
            *self._tile_configs)
