"""Compiled CPU loops (Numba) for the sparse step (:mod:`.sparse_step`): a minibatch of CSR rows without a copy.

scipy's route to a step on 128 documents gathers the batch's nonzeros, finds its distinct features, builds a (B, U)
CSR matrix over them and takes ``W[u]`` out of ``W`` and back: a dozen array passes and two sparse products, each
a NumPy call. These loops read the matrix's own ``indptr``/``indices``/``data`` through the batch's row ids:

1. :func:`batch_columns`: the batch's ``U`` distinct features ``u`` and each nonzero's slot in ``u``, O(nnz_batch)
   with a per-feature scratch (``slots``, all −1 between calls);
2. :func:`sparse_products_`: ``P = X[rows] V`` (B, K), each nonzero adding ``x·V[j]``; the model's row loop
   (:mod:`.cpu_loops`) then turns it into ``dZ``;
3. :func:`scatter_gradient`: ``dW_u = X[rows, u]ᵀ dZ`` (U, K), each nonzero adding ``x·dZ_i`` to its slot's row
   (duplicate column indices of a row are summed; unsorted ones need no sorting);
4. :func:`add_rows_` / :func:`adagrad_rows_`: the update of ``V[u]`` in place.

Numba is optional: without it (or with ``LINCLASS_GPU_NUMBA=0``) :mod:`.sparse_step` takes scipy's route.
"""

from __future__ import annotations

import numpy as np

from .cpu_loops import compiled


@compiled
def batch_columns(indptr, indices, rows, slots):
    """The distinct features of ``X[rows]`` and each nonzero's slot among them.

    Parameters
    ----------
    indptr, indices : int ndarrays, shapes (N + 1,), (nnz,)
        The CSR structure of X.
    rows : int ndarray, shape (B,)
    slots : int32 ndarray, shape (D,)
        −1 everywhere on entry and on return (scratch: feature j's slot while the batch is read).

    Returns
    -------
    u : int64 ndarray, shape (U,)
        The distinct features, in the order they first occur.
    local : int64 ndarray, shape (nnz_batch,)
        For the batch's k-th nonzero (rows in batch order), the slot of its feature in ``u``.
    """
    n_nonzeros = 0
    for i in range(rows.shape[0]):
        n_nonzeros += indptr[rows[i] + 1] - indptr[rows[i]]
    u = np.empty(n_nonzeros, dtype=np.int64)
    local = np.empty(n_nonzeros, dtype=np.int64)
    n_distinct = 0
    k = 0
    for i in range(rows.shape[0]):
        for position in range(indptr[rows[i]], indptr[rows[i] + 1]):
            feature = indices[position]
            slot = slots[feature]
            if slot < 0:
                slot = n_distinct
                slots[feature] = slot
                u[slot] = feature
                n_distinct += 1
            local[k] = slot
            k += 1
    for slot in range(n_distinct):
        slots[u[slot]] = -1
    return u[:n_distinct], local


@compiled
def sparse_products_(indptr, indices, data, rows, V, out):
    """``out[i] = Σ_{j ∈ row rows[i]} X[rows[i], j]·V[j]``: the (B, K) product ``X[rows] V`` from the nonzeros."""
    n_outputs = V.shape[1]
    for i in range(rows.shape[0]):
        product = out[i]
        product[:] = 0.0
        for position in range(indptr[rows[i]], indptr[rows[i] + 1]):
            value = data[position]
            weights = V[indices[position]]
            for k in range(n_outputs):
                product[k] += value * weights[k]


@compiled
def scatter_gradient(indptr, data, rows, local, dZ, n_distinct):
    """``X[rows, u]ᵀ dZ`` (U, K): slot s's row sums ``x·dZ_i`` over the batch's nonzeros of feature ``u[s]``.

    ``local`` is :func:`batch_columns`'s, ``dZ`` (B, K).
    """
    gradient = np.zeros((n_distinct, dZ.shape[1]), dtype=dZ.dtype)
    k = 0
    for i in range(rows.shape[0]):
        row_gradient = dZ[i]
        for position in range(indptr[rows[i]], indptr[rows[i] + 1]):
            target = gradient[local[k]]
            value = data[position]
            for c in range(row_gradient.shape[0]):
                target[c] += value * row_gradient[c]
            k += 1
    return gradient


@compiled
def add_rows_(V, u, gradient, factor):
    """``V[u[s]] += factor·gradient[s]`` for every slot s (the features of ``u`` are distinct)."""
    for s in range(gradient.shape[0]):
        row = V[u[s]]
        for c in range(row.shape[0]):
            row[c] += factor * gradient[s, c]


@compiled
def adagrad_rows_(V, accumulator, u, gradient, learning_rate, eps):
    """AdaGrad on the rows ``u`` (no penalty, see :mod:`.sparse_step`): ``G ← G + g²``, ``V ← V − lr·g/(√G + ε)``,
    in place on ``V`` and ``accumulator`` (D, K)."""
    for s in range(gradient.shape[0]):
        row, total_row = V[u[s]], accumulator[u[s]]
        for c in range(row.shape[0]):
            g = gradient[s, c]
            total = total_row[c] + g * g
            total_row[c] = total
            row[c] -= learning_rate * g / (np.sqrt(total) + eps)
