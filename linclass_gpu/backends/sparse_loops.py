"""Compiled CPU loops (Numba) for the sparse step (:mod:`.sparse_step`): a minibatch of CSR rows without a copy.

scipy's route to a step on 128 documents gathers the batch's nonzeros, finds its distinct features, builds a (B, U)
CSR matrix over them and takes ``W[u]`` out of ``W`` and back: a dozen array passes and two sparse products, each
a NumPy call. These loops read the matrix's own ``indptr``/``indices``/``data`` through the batch's row ids:

1. :func:`batch_columns_`: the batch's ``U`` distinct features ``u`` and each nonzero's slot in ``u``,
   O(nnz_batch) with a per-feature scratch (``slots``, all −1 between calls);
2. :func:`sparse_products_`: ``P = X[rows] V`` (B, K), each nonzero adding ``x·V[j]``; the model's row loop
   (:mod:`.cpu_loops`) then turns it into ``dZ``;
3. :func:`scatter_gradient_`: ``dW_u = X[rows, u]ᵀ dZ`` (U, K), each nonzero adding ``x·dZ_i`` to its slot's row
   (duplicate column indices of a row are summed; unsorted ones need no sorting);
4. :func:`add_rows_` / :func:`adagrad_rows_`: the update of ``V[u]`` in place.

These loops wait on memory, not arithmetic: the rows of ``V`` (and of AdaGrad's ``G``) a batch reads are scattered
over tens of MB (2¹⁸ features × 20 classes × 4 bytes each), and each is a cache miss that no hardware prefetcher
foresees. So each loop asks for what it will read next while it computes on the current rows (:func:`prefetch_span`:
every batch row's feature ids and values at once; :func:`prefetch_row`: the next document's feature marks and rows
of ``V``, the rows a few slots ahead in the updates), which overlaps the misses instead of taking them one after
another; the arithmetic is unchanged.

:mod:`.sparse_cpu_step` runs these pieces for a run of steps in one call.

Numba is optional: without it (or with ``LINCLASS_GPU_NUMBA=0``) :mod:`.sparse_step` takes scipy's route.
"""

from __future__ import annotations

import numpy as np

from .cpu_loops import compiled, numba

# How many slots ahead the row updates ask for their rows: enough to cover a miss (~100 ns) with the few rows'
# arithmetic in between, few enough that the lines are still in cache when their turn comes.
SLOTS_AHEAD = 8


def _prefetch_intrinsic():
    """``prefetch(array, index)``: LLVM's prefetch of the cache line holding ``array[index]`` (1-D, C-contiguous) for
    reading, kept in every cache level; compiled into the calling loop, no call of its own."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            byte_pointer = ir.IntType(8).as_pointer()
            # The intrinsic's name carries its pointer type: "p0i8" with typed pointers, "p0" with opaque ones.
            name = "llvm.prefetch.p0" if getattr(byte_pointer, "is_opaque", False) else "llvm.prefetch.p0i8"
            int32 = ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]), name)
            # Arguments: the address, 0 = for reading, 3 = keep in every cache level, 1 = data (not instructions).
            builder.call(function, [builder.bitcast(builder.gep(data, [args[1]]), byte_pointer), int32(0), int32(3),
                                    int32(1)])
            return context.get_dummy_value()

        return types.void(array, index), codegen

    return prefetch


_prefetch = _prefetch_intrinsic() if numba is not None else None


@compiled(inline=True)
def prefetch_row(flat, row, width):
    """Ask for the cache lines of row ``row`` of a C-contiguous matrix with ``width`` columns, given as its flat view
    ``flat``: its first and its last entry's, which for rows of up to a few lines (20 float32 classes: 80 bytes, two
    lines at most) are all of them."""
    _prefetch(flat, row * width)
    _prefetch(flat, (row + 1) * width - 1)


@compiled(inline=True)
def prefetch_span(array, start, end):
    """Ask for the cache lines of ``array[start:end]`` (1-D, C-contiguous), one prefetch per 64-byte line."""
    step = max(1, 64 // array.itemsize)
    for position in range(start, end, step):
        _prefetch(array, position)
    if end > start:
        _prefetch(array, end - 1)


@compiled
def batch_nonzeros(indptr, rows):
    """How many nonzeros the rows ``rows`` of a CSR matrix with row pointers ``indptr`` hold together."""
    count = 0
    for i in range(rows.shape[0]):
        count += indptr[rows[i] + 1] - indptr[rows[i]]
    return count


@compiled
def batch_columns_(indptr, indices, rows, slots, u, local):
    """The distinct features of ``X[rows]`` and each nonzero's slot among them, into ``u`` and ``local``.

    Parameters
    ----------
    indptr, indices : int ndarrays, shapes (N + 1,), (nnz,)
        The CSR structure of X.
    rows : int ndarray, shape (B,)
    slots : int32 ndarray, shape (D,)
        −1 everywhere on entry and on return (scratch: feature j's slot while the batch is read).
    u : int64 ndarray, shape (≥ nnz_batch,)
        Receives the distinct features in its first ``U`` entries, in the order they first occur.
    local : int64 ndarray, shape (≥ nnz_batch,)
        Receives, for the batch's k-th nonzero (rows in batch order), the slot of its feature in ``u``.

    Returns
    -------
    int
        ``U``.
    """
    for i in range(rows.shape[0]):
        prefetch_span(indices, indptr[rows[i]], indptr[rows[i] + 1])  # every row's ids at once: read one by one
    n_distinct = 0
    k = 0
    for i in range(rows.shape[0]):
        if i + 1 < rows.shape[0]:
            for position in range(indptr[rows[i + 1]], indptr[rows[i + 1] + 1]):
                prefetch_row(slots, indices[position], 1)
        for position in range(indptr[rows[i]], indptr[rows[i] + 1]):
            # Without a branch: whether a feature is new is a coin toss in a Zipf batch (about half its nonzeros
            # are first occurrences), so a branch would be mispredicted half the time, each costing the wait for
            # slots[feature]. u[n_distinct] is written every time and kept only when the count moves past it.
            feature = indices[position]
            slot = slots[feature]
            new = slot < 0
            slot = n_distinct if new else slot
            slots[feature] = slot
            u[n_distinct] = feature
            n_distinct += new
            local[k] = slot
            k += 1
    for slot in range(n_distinct):
        slots[u[slot]] = -1
    return n_distinct


@compiled
def sparse_products_(indptr, indices, data, rows, V, out):
    """``out[i] = Σ_{j ∈ row rows[i]} X[rows[i], j]·V[j]``: the (B, K) product ``X[rows] V`` from the nonzeros."""
    n_outputs, V_flat = V.shape[1], V.reshape(-1)
    for i in range(rows.shape[0]):
        prefetch_span(data, indptr[rows[i]], indptr[rows[i] + 1])  # the values, as batch_columns_ did the ids
    for i in range(rows.shape[0]):
        if i + 1 < rows.shape[0]:
            for position in range(indptr[rows[i + 1]], indptr[rows[i + 1] + 1]):
                prefetch_row(V_flat, indices[position], n_outputs)
        product = out[i]
        product[:] = 0.0
        # Four nonzeros per pass over the row's K sums: each pass stores the sums and the next loads them back, a
        # store-to-load wait per pass that one nonzero's K multiply-adds would not cover.
        start, end = indptr[rows[i]], indptr[rows[i] + 1]
        for position in range(start, end - (end - start) % 4, 4):
            value0, value1, value2, value3 = data[position], data[position + 1], data[position + 2], data[position + 3]
            weights0, weights1 = V[indices[position]], V[indices[position + 1]]
            weights2, weights3 = V[indices[position + 2]], V[indices[position + 3]]
            for k in range(n_outputs):
                product[k] += ((value0 * weights0[k] + value1 * weights1[k])
                               + (value2 * weights2[k] + value3 * weights3[k]))
        for position in range(end - (end - start) % 4, end):
            value = data[position]
            weights = V[indices[position]]
            for k in range(n_outputs):
                product[k] += value * weights[k]


@compiled
def scatter_gradient_(indptr, data, rows, local, dZ, gradient):
    """``gradient = X[rows, u]ᵀ dZ`` (U, K): slot s's row sums ``x·dZ_i`` over the batch's nonzeros of feature
    ``u[s]`` (duplicate column indices of a row are summed; unsorted ones need no sorting).

    ``local`` is :func:`batch_columns_`'s, ``dZ`` (B, K); ``gradient`` is overwritten.
    """
    flat = gradient.reshape(-1)
    for position in range(flat.size):
        flat[position] = 0.0
    k = 0
    for i in range(rows.shape[0]):
        row_gradient = dZ[i]
        for position in range(indptr[rows[i]], indptr[rows[i] + 1]):
            target = gradient[local[k]]
            value = data[position]
            for c in range(row_gradient.shape[0]):
                target[c] += value * row_gradient[c]
            k += 1


@compiled
def add_rows_(V, u, gradient, factor):
    """``V[u[s]] += factor·gradient[s]`` for every slot s (the features of ``u`` are distinct)."""
    V_flat = V.reshape(-1)
    for s in range(gradient.shape[0]):
        if s + SLOTS_AHEAD < gradient.shape[0]:
            prefetch_row(V_flat, u[s + SLOTS_AHEAD], V.shape[1])
        row = V[u[s]]
        for c in range(row.shape[0]):
            row[c] += factor * gradient[s, c]


@compiled
def adagrad_rows_(V, accumulator, u, gradient, learning_rate, eps):
    """AdaGrad on the rows ``u`` (no penalty, see :mod:`.sparse_step`): ``G ← G + g²``, ``V ← V − lr·g/(√G + ε)``,
    in place on ``V`` and ``accumulator`` (D, K)."""
    V_flat, accumulator_flat = V.reshape(-1), accumulator.reshape(-1)
    for s in range(gradient.shape[0]):
        if s + SLOTS_AHEAD < gradient.shape[0]:
            prefetch_row(V_flat, u[s + SLOTS_AHEAD], V.shape[1])
            prefetch_row(accumulator_flat, u[s + SLOTS_AHEAD], V.shape[1])
        row, total_row = V[u[s]], accumulator[u[s]]
        for c in range(row.shape[0]):
            g = gradient[s, c]
            total = total_row[c] + g * g
            total_row[c] = total
            row[c] -= learning_rate * g / (np.sqrt(total) + eps)
