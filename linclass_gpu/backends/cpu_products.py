"""Compiled CPU loops (Numba) for the NumPy backend's two products when the model has few outputs.

A step's products are ``Z = X W`` (B, D)·(D, C) and ``dW = Xᵀ dZ``. At C = 10 OpenBLAS runs them far below the
core's speed: its kernels are shaped for wide matrices, and a 10-column operand leaves most of each vector register
and each micro-tile empty. These loops are shaped for a narrow C instead, with the long D axis in the vector
registers (``linclass-gpu bench mnist`` compares the step with BLAS's two products, its ``numpy-gemm-floor``):

- :func:`logits_product_`: each output's weights made contiguous once (Wᵀ, C × D, 31 KB at MNIST: it stays in L1),
  then 4 rows × 2 outputs of dot products at a time, so every loaded X element feeds 2 products and every weight 4;
- :func:`weight_gradient_product_`: Gᵀ = dZᵀ X accumulated 2 outputs × 8 rows at a time (each pass over two
  outputs' D gradients adds 8 rows of X, scaled by their dZ), then stored transposed into ``dW``.

Both reassociate their sums (vectorised, in several partial sums, as BLAS's are) and allow fused multiply-adds, and
nothing else of fast-math: a NaN or inf propagates as it does through BLAS.

Where they pay is narrow, and :func:`products_pay` keeps to it: measured against OpenBLAS on one thread (AVX-512
Xeon, both products, B from 32 to 512, D from 100 to 3000, C from 1 to 16), they were faster by 1.1–2x for 9 to 15
outputs with at least 128 rows and 512 features, where BLAS's 8- and 16-wide micro-kernels leave a remainder; at 8 or
16 outputs, fewer than 8, short rows or small batches BLAS was as fast or up to 3x faster. Elsewhere the backend
calls BLAS. The choice depends on the shape alone, so a run is repeatable bitwise.
"""

from __future__ import annotations

import numpy as np

from ..threads import FLOPS_PER_THREAD
from .cpu_loops import compiled

# The band where the loops beat BLAS (see above): outputs, and the fewest rows and features.
PRODUCT_OUTPUTS = range(9, 16)
PRODUCT_MIN_ROWS, PRODUCT_MIN_FEATURES = 128, 512


def products_pay(n_rows: int, n_features: int, n_outputs: int) -> bool:
    """Whether the compiled products beat BLAS for a (B, D)·(D, C) step: inside the measured band, and a product one
    BLAS thread would run anyway (these loops use one core; larger products go to BLAS and its threads, see
    :mod:`linclass_gpu.threads`)."""
    return (n_outputs in PRODUCT_OUTPUTS and n_rows >= PRODUCT_MIN_ROWS and n_features >= PRODUCT_MIN_FEATURES
            and 2.0 * n_rows * n_features * n_outputs <= FLOPS_PER_THREAD)


@compiled(inline=True)
def transposed_shape(n_features, n_outputs):
    """The shape of the transposed operands (Wᵀ, Gᵀ) of :func:`logits_product_t_` and
    :func:`weight_gradient_product_t_`: C padded to an even count of rows, each a contiguous row of D."""
    return n_outputs + n_outputs % 2, n_features


@compiled(reassociate=True)
def logits_product_(X, W, Z):
    """``Z = X W`` for float X (B, D) and W (D, C), C-contiguous, into Z (B, C): :func:`logits_product_t_` on Wᵀ."""
    n_outputs = W.shape[1]
    weights = np.zeros(transposed_shape(W.shape[0], n_outputs), dtype=W.dtype)
    transpose_into(W, weights)
    logits_product_t_(X, weights, Z)


@compiled(reassociate=True)
def logits_product_t_(X, weights, Z):
    """``Z = X W`` from Wᵀ: X (B, D), ``weights`` Wᵀ (:func:`transposed_shape`, a zero last row when C is odd), Z
    (B, C).

    Row blocks past the last row repeat it, and an odd C's padding output computes zeros; what the padding computes
    is not stored.
    """
    n_rows, n_outputs = X.shape[0], Z.shape[1]
    last = n_rows - 1
    for i in range(0, n_rows, 4):
        x0, x1, x2, x3 = X[i], X[min(i + 1, last)], X[min(i + 2, last)], X[min(i + 3, last)]
        for c in range(0, n_outputs, 2):
            w, v = weights[c], weights[c + 1]
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = Z.dtype.type(0)
            for j in range(w.shape[0]):
                a0, a1, a2, a3 = x0[j], x1[j], x2[j], x3[j]
                s0 += a0 * w[j]
                s1 += a1 * w[j]
                s2 += a2 * w[j]
                s3 += a3 * w[j]
                t0 += a0 * v[j]
                t1 += a1 * v[j]
                t2 += a2 * v[j]
                t3 += a3 * v[j]
            _store_pair(Z, i, c, s0, t0)
            _store_pair(Z, i + 1, c, s1, t1)
            _store_pair(Z, i + 2, c, s2, t2)
            _store_pair(Z, i + 3, c, s3, t3)


@compiled(inline=True)
def _store_pair(Z, row, output, first, second):
    """``Z[row, output:output + 2] = first, second``, leaving out what falls past Z's last row or column."""
    if row < Z.shape[0]:
        Z[row, output] = first
        if output + 1 < Z.shape[1]:
            Z[row, output + 1] = second


@compiled(reassociate=True)
def weight_gradient_product_(X, dZ, dW):
    """``dW = Xᵀ dZ`` for float X (B, D) and dZ (B, C), C-contiguous, into dW (D, C):
    :func:`weight_gradient_product_t_`, then transposed."""
    n_outputs = dZ.shape[1]
    gradient = np.empty(transposed_shape(X.shape[1], n_outputs), dtype=dW.dtype)
    weight_gradient_product_t_(X, dZ, gradient)
    transpose_into(gradient[:n_outputs], dW)


@compiled(reassociate=True)
def weight_gradient_product_t_(X, dZ, gradient):
    """``Gᵀ = (Xᵀ dZ)ᵀ`` for float X (B, D) and dZ (B, C) into ``gradient`` (:func:`transposed_shape`): output c's
    gradients contiguous, and a zero last row when C is odd.

    Row blocks past the last row repeat it with zero coefficients, and an odd C is padded with a zero output: the
    padding adds zeros (an inf or NaN of the repeated row reaches the same entries through the row itself).
    """
    n_rows, n_features = X.shape
    n_outputs = dZ.shape[1]
    coefficients = np.zeros((n_outputs + n_outputs % 2, n_rows + (-n_rows) % 8), dtype=dZ.dtype)  # dZᵀ, padded
    transpose_into(dZ, coefficients)
    gradient[:] = 0
    last = n_rows - 1
    for i in range(0, n_rows, 8):
        x0, x1, x2, x3 = X[i], X[min(i + 1, last)], X[min(i + 2, last)], X[min(i + 3, last)]
        x4, x5, x6, x7 = X[min(i + 4, last)], X[min(i + 5, last)], X[min(i + 6, last)], X[min(i + 7, last)]
        for c in range(0, n_outputs, 2):
            z0, z1, z2, z3, z4, z5, z6, z7 = coefficients[c, i:i + 8]
            y0, y1, y2, y3, y4, y5, y6, y7 = coefficients[c + 1, i:i + 8]
            g, h = gradient[c], gradient[c + 1]
            for j in range(n_features):
                a0, a1, a2, a3, a4, a5, a6, a7 = x0[j], x1[j], x2[j], x3[j], x4[j], x5[j], x6[j], x7[j]
                g[j] += ((z0 * a0 + z1 * a1) + (z2 * a2 + z3 * a3)) + ((z4 * a4 + z5 * a5) + (z6 * a6 + z7 * a7))
                h[j] += ((y0 * a0 + y1 * a1) + (y2 * a2 + y3 * a3)) + ((y4 * a4 + y5 * a5) + (y6 * a6 + y7 * a7))


@compiled(inline=True)
def transpose_into(source, target):
    """``target[:n, :m] = source.T`` for ``source`` (m, n), as loops: Numba compiles an assignment from a transposed
    view for seconds, these in a blink."""
    for row in range(source.shape[0]):
        for column in range(source.shape[1]):
            target[column, row] = source[row, column]
