"""Compiled CPU loops (Numba) for the NumPy backend's two seams.

At MNIST shapes (B = 128, D = 784, C = 10) a step's two GEMMs take about 100 µs on one core, while the array-generic
row-wise pass and update (:mod:`.rowwise`, :meth:`.ArrayBackend.sgd_update_`) are about thirty NumPy calls on 1,280
logits and 7,850 parameters: each call costs a microsecond of dispatch for well under a microsecond of arithmetic.
Here each of those passes is one loop that reads its operands once, as the CuPy backend's CUDA kernels
(``cuda_rowwise.cu``) do on a GPU:

- :func:`softmax_rows_` / :func:`sigmoid_rows_`: logits to ``dZ`` and the weighted loss, with ``db = Σ_i dZ_i`` and
  the dW-side scale folded in (``logits_to_grad_``); the softmax's float32 exp is vectorised over the whole batch
  (:func:`exp_nonpositive_`, within one ulp);
- :func:`update_`: L2, plain/momentum/Nesterov SGD, AdaGrad or Adam, then L1's soft threshold, per entry
  (``sgd_update_``).

The arithmetic follows :mod:`.rowwise` and :meth:`.ArrayBackend.sgd_update_` step for step, in the compute dtype
(float32 or float64) with the loss summed in float64; the tests run both implementations against the float64 oracle.
Loops are compiled on first use per dtype and cached on disk (``cache=True``), so later processes load them. Numba
checks a cached loop against its own file only: after editing a loop that another file's loop calls (these are
called by :mod:`.cpu_step`), delete the ``*.nbi``/``*.nbc`` files in ``__pycache__`` or the caller keeps the old one.

Numba is optional (``pip install linclass-gpu[cpu]``): :data:`NUMBA_AVAILABLE` says whether it imported, and
:data:`NUMBA_ENV` set to ``0`` turns the loops off (the NumPy backend then runs its array-generic code).
"""

from __future__ import annotations

import math
import os

import numpy as np

try:
    import numba
except ImportError:  # the NumPy backend runs its array-generic code
    numba = None

NUMBA_AVAILABLE = numba is not None
NUMBA_VERSION = numba.__version__ if NUMBA_AVAILABLE else None
# Set to "0" to run the NumPy backend's array-generic code even where Numba is installed.
NUMBA_ENV = "LINCLASS_GPU_NUMBA"

# The optimizers of :func:`update_`, as its ``optimizer`` argument.
UPDATE_SGD, UPDATE_ADAGRAD, UPDATE_ADAM = 0, 1, 2
# The sigmoid losses of :func:`sigmoid_rows_`, as its ``squared_error`` argument.
BINARY_CROSS_ENTROPY, SQUARED_ERROR = False, True


def compiled_loops_enabled() -> bool:
    """Whether the NumPy backend uses these loops: Numba imported and not turned off by :data:`NUMBA_ENV`."""
    return NUMBA_AVAILABLE and os.environ.get(NUMBA_ENV, "1") != "0"


def compiled(function=None, *, reassociate: bool = False, inline: bool = False):
    """``function`` compiled by Numba (nopython, cached on disk), or as it is when Numba is absent (never called
    then: :func:`compiled_loops_enabled` is False). ``@compiled`` or ``@compiled(reassociate=True)``.

    ``error_model="numpy"``: a division by 0 gives inf or NaN as NumPy's does, where Python's model tests every
    divisor and raises, a branch that keeps each division scalar (AdaGrad's per-entry step runs several times
    slower). ``reassociate``: sums may be regrouped and multiply-adds fused (LLVM's ``reassoc`` and ``contract``
    flags, no other fast-math), so a reduction vectorises; for the products, whose BLAS counterparts do the same.
    ``inline``: a small helper is inlined into each compiled caller (Numba's ``inline="always"``), not called.
    """
    if function is None:
        return lambda decorated: compiled(decorated, reassociate=reassociate, inline=inline)
    if numba is None:
        return function
    fastmath = {"reassoc", "contract"} if reassociate else False
    return numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=fastmath,
                      inline="always" if inline else "never")(function)


# exp in float32 for x <= 0 (Cody–Waite reduction and Cephes' minimax polynomial, see exp_nonpositive_): below
# EXP_UNDERFLOW e^x is under float32's smallest normal number and is returned as 0.
EXP_UNDERFLOW = -87.33654
LOG2_E = 1.4426950408889634
# ln 2 split so that n·LN2_HIGH is exact for the n that occur (LN2_HIGH has 9 significant bits).
LN2_HIGH, LN2_LOW = 0.693359375, -2.12194440e-4
# Values per pass of exp_nonpositive_: its scratch (2ⁿ) stays small, however large the batch.
EXP_CHUNK = 256
EXP_POLYNOMIAL = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                  5.0000001201e-1)


@compiled
def exp_nonpositive_(values):
    """``values ← exp(values)`` in place for ``values ≤ 0`` (a 1-D array), in a loop the compiler vectorises.

    float32: ``e^x = 2ⁿ e^r`` with ``n = round(x log₂e)``, ``r = x − n ln2`` (in two parts, so r carries no
    rounding of n ln2), ``e^r ≈ 1 + r + r² P(r)`` on ``|r| ≤ ln2/2`` (Cephes' ``expf`` polynomial); 2ⁿ is built
    from its exponent bits. Within one float32 ulp of e^x, where libm's ``expf`` is a scalar call per value (most
    of the softmax's time at 10 classes). Below :data:`EXP_UNDERFLOW`, 0 (e^x is subnormal or 0 there); a NaN stays
    NaN. float64 values take ``np.exp``.
    """
    if values.itemsize != 4:
        for k in range(values.size):
            values[k] = np.exp(values[k])
        return
    real = values.dtype.type
    powers = np.empty(min(values.size, EXP_CHUNK), dtype=values.dtype)  # 2ⁿ of a chunk, written as its bits
    exponent_bits = powers.view(np.int32)
    p0, p1, p2, p3, p4, p5 = EXP_POLYNOMIAL
    for start in range(0, values.size, EXP_CHUNK):
        chunk = values[start:start + EXP_CHUNK]
        for k in range(chunk.size):
            x = chunk[k]
            underflows = x < real(EXP_UNDERFLOW)
            x = real(EXP_UNDERFLOW) if underflows else x  # keeps n, and the bits below, in range
            n = np.floor(x * real(LOG2_E) + real(0.5))
            r = (x - n * real(LN2_HIGH)) - n * real(LN2_LOW)
            polynomial = ((((real(p0) * r + real(p1)) * r + real(p2)) * r + real(p3)) * r + real(p4)) * r + real(p5)
            chunk[k] = real(0.0) if underflows else polynomial * (r * r) + r + real(1.0)
            exponent_bits[k] = (np.int32(n) + np.int32(127)) << np.int32(23)  # 2ⁿ: biased exponent, mantissa 0
        for k in range(chunk.size):
            chunk[k] *= powers[k]


@compiled
def softmax_rows_(Z, targets, weights, bias, logit_scale, dz_scale, db):
    """Turn ``X_b W`` into ``dz_scale·w_i (softmax(z_i) − onehot(y_i))/B`` in place; return ``Σ_i w_i CE_i``.

    Parameters
    ----------
    Z : ndarray, shape (B, C), C-contiguous, float32 or float64
        ``X_b W`` on entry; the logits are ``z_i = logit_scale·Z_i + b``.
    targets : int64 ndarray, shape (B,)
        Flat index ``i·C + y_i`` of row i's target logit (rows-major, as :func:`.target_logit_indices_` makes).
    weights : ndarray, shape (B,) or (0,)
        ``w_i``; an empty array is 1 for every row.
    bias : ndarray, shape (C,)
    logit_scale, dz_scale : float
        ``dz_scale`` multiplies what is written (the ``x_scale`` of ``dW = x_scale·Xᵀ dZ``), not ``db``.
    db : ndarray, shape (C,)
        Receives ``Σ_i w_i (P_i − Y_i)/B``.

    Returns
    -------
    float
        The weighted summed cross-entropy, in float64.
    """
    n_rows, n_classes = Z.shape
    inv_batch = 1.0 / n_rows
    db[:] = 0.0
    loss_sum = 0.0
    target_shifted = np.empty(n_rows, dtype=Z.dtype)
    # 1. z = s·(X W) + b and the row max m, kept as z − m: logsumexp(z) = m + log Σ exp(z − m), exp(z − m) <= 1.
    #    The max starts from the first logit, not −inf (a float64 constant), so a float32 row stays float32.
    for i in range(n_rows):
        row = Z[i]
        row_max = logit_scale * row[0] + bias[0]
        for k in range(n_classes):
            row[k] = logit_scale * row[k] + bias[k]
            row_max = max(row_max, row[k])
        for k in range(n_classes):
            row[k] -= row_max
        target_shifted[i] = row[targets[i] - i * n_classes]
    # 2. exp(z − m) over the whole batch at once, vectorised.
    exp_nonpositive_(Z.reshape(-1))
    for i in range(n_rows):
        row = Z[i]
        row_scale = inv_batch * (weights[i] if weights.size else 1.0)  # w_i/B
        target = targets[i] - i * n_classes
        # 3. CE_i = log Σ exp(z − m) − (z_y − m), the difference taken in that order as rowwise.py does.
        row_sum = 0.0
        for k in range(n_classes):
            row_sum += row[k]
        loss_sum += (row_scale * n_rows) * (math.log(row_sum) - target_shifted[i])
        # 4. dL/dz = softmax(z) − onehot(y), times w_i/B; db takes it before the dW-side scale.
        probability_scale = row_scale / row_sum
        for k in range(n_classes):
            dz = row[k] * probability_scale
            db[k] += dz
            row[k] = dz * dz_scale
        db[target] -= row_scale
        row[target] -= row_scale * dz_scale
    return loss_sum


@compiled
def sigmoid_rows_(Z, targets, weights, bias, logit_scale, dz_scale, db, squared_error):
    """Turn ``X_b W`` into ``dz_scale·w_i ∂ℓ/∂z_ik / B`` in place for K independent sigmoids; return ``Σ w_i ℓ_i``.

    Binary cross-entropy: ``ℓ = Σ_k max(z, 0) − z·y + log1p(e^{−|z|})``, ``∂ℓ/∂z = σ(z) − y``. Squared error
    (``squared_error`` True): ``ℓ = Σ_k (σ − y)²``, ``∂ℓ/∂z = 2(σ − y)σ'`` with ``σ' = e^{−|z|}/(1 + e^{−|z|})²``
    (``σ(1 − σ)`` rounds to 0 in float32 from |z| ≈ 17). ``σ`` is taken from ``e^{−|z|}`` on either side of 0,
    so no exp overflows. Shapes as in :func:`softmax_rows_`, with ``targets`` the (B, K) {0, 1} targets in Z's dtype.
    """
    n_rows, n_outputs = Z.shape
    inv_batch = 1.0 / n_rows
    db[:] = 0.0
    loss_sum = 0.0
    for i in range(n_rows):
        row = Z[i]
        weight = weights[i] if weights.size else 1.0
        row_loss = 0.0
        for k in range(n_outputs):
            z = logit_scale * row[k] + bias[k]
            exp_neg_abs = np.exp(-abs(z))
            probability = (1.0 if z >= 0 else exp_neg_abs) / (1.0 + exp_neg_abs)
            error = probability - targets[i, k]
            if squared_error:
                row_loss += error * error
                dz = 2.0 * error * exp_neg_abs / ((1.0 + exp_neg_abs) * (1.0 + exp_neg_abs))
            else:
                row_loss += max(z, 0.0) - z * targets[i, k] + math.log1p(exp_neg_abs)
                dz = error
            dz *= weight * inv_batch
            db[k] += dz
            row[k] = dz * dz_scale
        loss_sum += weight * row_loss
    return loss_sum


@compiled
def _soft_threshold(p, threshold):
    """``sign(p)·max(|p| − threshold, 0)``, the sign bit kept where the result is 0 (as ``copysign`` does)."""
    return math.copysign(max(abs(p) - threshold, p - p), p)


@compiled
def update_(param, grad, velocity, accumulator, learning_rate, l2, l1, momentum, nesterov, optimizer, eps,
            beta1, beta2, bias_correction1, bias_correction2_sqrt):
    """:meth:`.ArrayBackend.sgd_update_`'s rule, one pass per entry, in place on 1-D arrays of one float dtype.

    ``g = grad + l2·p``; then SGD (``optimizer`` :data:`UPDATE_SGD`): ``v ← μ v + g``, ``p ← p − lr·(g + μ v if nesterov
    else v)`` (``velocity`` empty: ``p ← p − lr·g``), step size ``s = lr``; AdaGrad: ``G ← G + g²``,
    ``s = lr/(√G + ε)``, ``p ← p − s·g``; Adam (``velocity`` is m, ``accumulator`` v): ``m ← β₁ m + (1 − β₁) g``,
    ``v ← β₂ v + (1 − β₂) g²``, ``s = lr/(√v/√(1 − β₂ᵗ) + ε)``, ``p ← p − s·m/(1 − β₁ᵗ)``; with ``l1``,
    ``p ← sign(p)·max(|p| − s·l1, 0)``. ``grad`` is left as it came. Each optimizer is its own loop, with no
    branch inside.
    """
    if optimizer == UPDATE_ADAM:
        for j in range(param.size):
            g = grad[j] + l2 * param[j]  # d/dp of l2/2·‖p‖² is l2·p
            m = beta1 * velocity[j] + (1.0 - beta1) * g
            v = beta2 * accumulator[j] + (1.0 - beta2) * g * g
            velocity[j], accumulator[j] = m, v
            size = learning_rate / (np.sqrt(v) / bias_correction2_sqrt + eps)
            param[j] = _soft_threshold(param[j] - size * (m / bias_correction1), size * l1)
    elif optimizer == UPDATE_ADAGRAD:
        for j in range(param.size):
            g = grad[j] + l2 * param[j]
            total = accumulator[j] + g * g
            accumulator[j] = total
            size = learning_rate / (np.sqrt(total) + eps)
            param[j] = _soft_threshold(param[j] - size * g, size * l1)
    elif velocity.size == 0:
        for j in range(param.size):
            param[j] -= learning_rate * (grad[j] + l2 * param[j])
    elif nesterov:
        for j in range(param.size):
            g = grad[j] + l2 * param[j]
            v = momentum * velocity[j] + g
            velocity[j] = v
            param[j] -= learning_rate * (g + momentum * v)
    else:
        for j in range(param.size):
            v = momentum * velocity[j] + grad[j] + l2 * param[j]
            velocity[j] = v
            param[j] -= learning_rate * v
    if l1 and optimizer == UPDATE_SGD:
        threshold = learning_rate * l1
        for j in range(param.size):
            param[j] = _soft_threshold(param[j], threshold)


@compiled
def _runtime_started():
    """A loop of nothing, cached on disk: loading it starts Numba's runtime."""
    return True


def start_runtime() -> None:
    """Start Numba's JIT runtime (LLVM and its target machine: tens of MB resident, once per process, whatever the
    data) by loading one empty compiled function; nothing where the loops are off. A memory measurement that counts
    the imports in its baseline can count this fixed cost there too."""
    if compiled_loops_enabled():
        _runtime_started()
