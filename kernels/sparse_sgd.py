"""The fused SGD step on sparse rows (CSR): a step costs O(nnz_batch·K) and touches only the rows of ``W`` that occur.

``X`` stays on the device as its CSR arrays ``indptr`` (N + 1,), ``indices`` and ``data`` (nnz,); a minibatch is a
device array of row ids into them, so shuffling copies nothing. ``W = s·V`` with a host scalar ``s`` (the lazy L2
scale of ``linclass_gpu/backends/sparse_step.py``), so the kernels see ``V`` and the logit scale ``s·x_scale``.

Two launches per step, no host synchronisation and no sort:

1. :func:`sparse_sgd_grad_kernel`, one program per block of batch rows::

       Z_i  = s·x_scale·Σ_nz x_ij V[j, :] + b       each nonzero reads one row of V; the block's rows advance together
       loss += Σ_i w_i ℓ_i                           softmax + cross-entropy, or K sigmoids (BCE or squared error)
       dZ_i = w_i (P_i − Y_i) / B
       G[j, :] += x_scale·x_ij·dZ_i                  atomics into the (D, K) gradient buffer, only rows j that occur
       db += Σ_i dZ_i

   A column index repeated within a row adds its two terms, which is the sum the dense row holds; unsorted indices
   need nothing. K ≤ :data:`MAX_OUTPUTS`: a row block's logits are one (BLOCK_B, BLOCK_K) tile, no class-tile loop.
2. :func:`sparse_sgd_update_kernel`, over the same row blocks: for each nonzero's feature ``j`` a program claims the
   row with ``tl.atomic_xchg(owner + j, step)``; the one that finds another value than ``step`` there owns ``j`` for
   this step (exactly one does, however often ``j`` occurs in the batch), applies ``V[j] ← V[j] − (lr/s)·G[j]`` and
   zeroes ``G[j]``. Stream order makes ``G`` complete before the update starts. Program 0 also updates the bias
   densely (never penalised) and zeroes ``db``.

Only plain SGD with L2 lives here: the L2 factor is the host's ``s ← s·(1 − lr·l2)``, folded into ``V`` by a torch
multiply when ``|s|`` leaves its range (``linclass_gpu/backends/triton_sparse.py``).

A step's changing scalars (the logit scale, the two step sizes, the claim id) come as arguments, or, given
``step_scalars``, from a row of a device table: the launches of an epoch recorded once in a CUDA graph then read each
replay's values from the same addresses (``linclass_gpu/backends/triton_graph.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._tiles import LAUNCH_OPTIONS, row_block_lanes, sigmoid_loss_and_dz, softmax_dz

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Values of one (BLOCK_B, BLOCK_K) logits tile: the logits, probabilities and dZ of a row block stay in registers, and
# 4096 fp32 values over 4 warps are 32 registers per thread per tile.
TILE_VALUES = 4096
NUM_WARPS = 4
# Batch rows per program when K is small: enough lanes for the gathers of V's rows, few enough that a block's longest
# row (its rows advance through their nonzeros together) idles little of the block.
MAX_BLOCK_B = 16
# One class tile per row block (no online log-sum-exp over tiles): K up to a tile of one row.
MAX_OUTPUTS = TILE_VALUES
# Smallest BLOCK_K: K = 1 or 3 still gets a tile wide enough for a simple layout; padded outputs are masked.
MIN_BLOCK_K = 16
# The sigmoid models and the loss kind sigmoid_loss_and_dz takes for each; with the softmax, every model.
SIGMOID_LOSSES = {"sigmoid": "bce", "sigmoid_mse": "mse"}
MODELS = ("softmax", *SIGMOID_LOSSES)
# Argument types for the compile report (other pointers fp32, other scalars int32): int32 CSR arrays (fewer than 2^31
# nonzeros and features, the backend's common case), int64 row ids and class ids, the fp64 loss.
# A step's row of the scalar table: [s·x_scale, lr/s, lr, claim id as int32 bits]; 16 bytes keep every row aligned.
STEP_SCALARS = 4
ARG_TYPES = {"rows_ptr": "*i64", "indptr_ptr": "*i32", "indices_ptr": "*i32", "y_ptr": "*i64", "loss_ptr": "*fp64",
             "owner_ptr": "*i32", "logit_scale": "fp32", "x_scale": "fp32", "grad_scale": "fp32",
             "weight_step": "fp32", "bias_step": "fp32"}


def sparse_tile_shape(n_outputs: int) -> tuple[int, int]:
    """``(BLOCK_B, BLOCK_K)`` for ``K = n_outputs``: a tile of at most :data:`TILE_VALUES` values."""
    block_k = max(MIN_BLOCK_K, triton.next_power_of_2(n_outputs))
    return max(1, min(MAX_BLOCK_B, TILE_VALUES // block_k)), block_k


# ---------------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _row_nonzeros(rows_ptr, indptr_ptr, lanes, B):
    """The batch rows at positions ``lanes``: ``row`` (int64 ids), ``row_mask`` (lane < B), and each row's first
    nonzero ``start`` and nonzero count ``length`` in the CSR arrays (int64: nnz may pass 2^31; 0 on masked lanes)."""
    row_mask = lanes < B
    row = tl.load(rows_ptr + lanes, mask=row_mask, other=0).to(tl.int64)
    start = tl.load(indptr_ptr + row, mask=row_mask, other=0).to(tl.int64)
    end = tl.load(indptr_ptr + row + 1, mask=row_mask, other=0).to(tl.int64)
    return row, row_mask, start, end - start


@triton.jit
def _nonzero_rows(indices_ptr, position, nz_mask, cols, K):
    """Offsets and mask of the rows ``V[j, :K]`` of the nonzeros at ``position`` (one per lane; ``j`` int64: D·K may
    pass 2^31), and ``j`` itself."""
    feature = tl.load(indices_ptr + position, mask=nz_mask, other=0).to(tl.int64)
    offsets = feature[:, None] * K + cols[None, :]
    return offsets, nz_mask[:, None] & (cols < K)[None, :], feature


@triton.jit
def sparse_sgd_grad_kernel(
    rows_ptr, indptr_ptr, indices_ptr, data_ptr, y_ptr, sample_weight_ptr, V_ptr, b_ptr, G_ptr, db_ptr, loss_ptr,
    step_scalars_ptr, B, K, logit_scale, x_scale, grad_scale,
    SOFTMAX: tl.constexpr, SIGMOID_LOSS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Loss and gradient of the batch ``rows[:B]`` (step 1 of the module notes), added into ``G`` (D, K), ``db`` (K,)
    and the fp64 (1,) ``loss``.

    ``y`` holds class ids (N,) for the softmax (``SOFTMAX``), {0, 1} targets (N, K) for the sigmoid models;
    ``sample_weight`` (N,) or None; ``grad_scale`` is 1/B; ``step_scalars`` (None, or this step's table row) holds
    ``logit_scale`` in place of the argument.
    """
    if step_scalars_ptr is not None:
        logit_scale = tl.load(step_scalars_ptr)
    lanes = row_block_lanes(tl.program_id(0), BLOCK_B)
    row, row_mask, start, length = _row_nonzeros(rows_ptr, indptr_ptr, lanes, B)
    if sample_weight_ptr is not None:
        weight = tl.load(sample_weight_ptr + row, mask=row_mask, other=0.0).to(tl.float32)
    else:
        weight = tl.where(row_mask, 1.0, 0.0)
    cols = tl.arange(0, BLOCK_K)
    col_mask = cols < K
    n_steps = tl.max(length, axis=0)

    # 1. X[rows] V: nonzero t of every row of the block at once, each adding x·V[j, :] to its row's logits.
    xv = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
    for t in range(0, n_steps):
        nz_mask = t < length
        offsets, mask, _ = _nonzero_rows(indices_ptr, start + t, nz_mask, cols, K)
        value = tl.load(data_ptr + start + t, mask=nz_mask, other=0.0).to(tl.float32)
        xv += value[:, None] * tl.load(V_ptr + offsets, mask=mask, other=0.0)
    # (s·x_scale·X) V = s·x_scale·(X V): the scales multiply the small tile.
    z = xv * logit_scale + tl.load(b_ptr + cols, mask=col_mask, other=0.0)[None, :]

    # 2. The weighted loss and dZ = w_i (P − Y)/B (0 on masked rows and padded outputs).
    if SOFTMAX:
        y = tl.load(y_ptr + row, mask=row_mask, other=0).to(tl.int32)
        z = tl.where(col_mask[None, :], z, float("-inf"))
        m = tl.max(z, axis=1)
        s = tl.sum(tl.exp(z - m[:, None]), axis=1)
        z_target = tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
        # CE_i = lse_i − z_{i,y_i} = (m_i − z_{i,y_i}) + log s_i: the difference first (m and z_y may be 1e4).
        loss = tl.sum(((m - z_target) + tl.log(s)) * weight, axis=0)
        _probabilities, dz = softmax_dz(z, y, m, 1.0 / s, weight * grad_scale, 0, BLOCK_K)
    else:
        target_mask = row_mask[:, None] & col_mask[None, :]
        y = tl.load(y_ptr + row[:, None] * K + cols[None, :], mask=target_mask, other=0).to(tl.float32)
        losses, dz, _probabilities = sigmoid_loss_and_dz(z, y, tl.where(target_mask, weight[:, None], 0.0), grad_scale,
                                                         SIGMOID_LOSS)
        loss = tl.sum(tl.sum(losses, axis=1), axis=0)
    tl.atomic_add(loss_ptr, loss.to(tl.float64), sem="relaxed")
    tl.atomic_add(db_ptr + cols, tl.sum(dz, axis=0), mask=col_mask, sem="relaxed")

    # 3. dW = (x_scale·X)ᵀ dZ, scattered row by row: nonzero (i, j, x) adds x_scale·x·dZ_i to G[j, :].
    dz = dz * x_scale
    for t in range(0, n_steps):
        nz_mask = t < length
        offsets, mask, _ = _nonzero_rows(indices_ptr, start + t, nz_mask, cols, K)
        value = tl.load(data_ptr + start + t, mask=nz_mask, other=0.0).to(tl.float32)
        tl.atomic_add(G_ptr + offsets, value[:, None] * dz, mask=mask, sem="relaxed")


@triton.jit
def sparse_sgd_update_kernel(
    rows_ptr, indptr_ptr, indices_ptr, V_ptr, G_ptr, owner_ptr, b_ptr, db_ptr, step_scalars_ptr,
    B, K, step, weight_step, bias_step,
    FIT_INTERCEPT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The update of the rows of ``V`` (D, K) that the batch ``rows[:B]`` touches (step 2 of the module notes):
    ``V[j] ← V[j] − weight_step·G[j]`` (``weight_step`` = lr/s), ``G[j] ← 0``, each distinct ``j`` once, claimed
    through ``owner`` (D,) int32 with this step's id ``step``; program 0 also does ``b ← b − bias_step·db``,
    ``db ← 0``. ``step_scalars`` (None, or this step's table row) holds ``weight_step``, ``bias_step`` and ``step``
    in place of the arguments.
    """
    if step_scalars_ptr is not None:
        weight_step = tl.load(step_scalars_ptr + 1)
        bias_step = tl.load(step_scalars_ptr + 2)
        step = tl.load(step_scalars_ptr + 3).to(tl.int32, bitcast=True)
    pid = tl.program_id(0)
    lanes = row_block_lanes(pid, BLOCK_B)
    _, _, start, length = _row_nonzeros(rows_ptr, indptr_ptr, lanes, B)
    cols = tl.arange(0, BLOCK_K)
    for t in range(0, tl.max(length, axis=0)):
        nz_mask = t < length
        offsets, mask, feature = _nonzero_rows(indices_ptr, start + t, nz_mask, cols, K)
        # Exactly one claim of row j finds an id other than this step's: the row's owner for this step.
        previous = tl.atomic_xchg(owner_ptr + feature, step, mask=nz_mask, sem="relaxed")
        mask = mask & (previous != step)[:, None]
        gradient = tl.load(G_ptr + offsets, mask=mask, other=0.0)
        tl.store(V_ptr + offsets, tl.load(V_ptr + offsets, mask=mask, other=0.0) - weight_step * gradient, mask=mask)
        tl.store(G_ptr + offsets, tl.zeros_like(gradient), mask=mask)
    if pid == 0:
        col_mask = cols < K
        if FIT_INTERCEPT:
            db = tl.load(db_ptr + cols, mask=col_mask, other=0.0)
            tl.store(b_ptr + cols, tl.load(b_ptr + cols, mask=col_mask, other=0.0) - bias_step * db, mask=col_mask)
        tl.store(db_ptr + cols, tl.zeros((BLOCK_K,), dtype=tl.float32), mask=col_mask)


# ---------------------------------------------------------------------------------------------------------------------
# Launchers: check, allocate nothing (buffers belong to the caller), launch
# ---------------------------------------------------------------------------------------------------------------------

_INDEX_DTYPES = (torch.int32, torch.int64)


def _check_csr(indptr, indices, data, n_features):
    """The CSR arrays of an (N, D) matrix: 1-D integer ``indptr`` (N + 1,) and ``indices`` (nnz,), float32 ``data``."""
    if indptr.ndim != 1 or indptr.dtype not in _INDEX_DTYPES or indptr.shape[0] < 1:
        raise ValueError("indptr must be a 1-D int32 or int64 array of N + 1 offsets")
    if indices.ndim != 1 or indices.dtype not in _INDEX_DTYPES:
        raise ValueError("indices must be a 1-D int32 or int64 array")
    if data.dtype != torch.float32 or tuple(data.shape) != tuple(indices.shape):
        raise ValueError(f"data must be float32 with one value per index ({indices.shape[0]}), got {data.dtype} "
                         f"{tuple(data.shape)}")
    if n_features >= 2**31 and indices.dtype != torch.int64:
        raise ValueError("indices must be int64 for 2^31 features or more")


def _check_params(V, b, G, db):
    """``V`` and ``G`` float32 contiguous (D, K), ``b`` and ``db`` float32 (K,); returns ``(D, K)``."""
    if V.ndim != 2 or V.dtype != torch.float32 or not V.is_contiguous():
        raise ValueError("V must be a contiguous float32 (D, K) array")
    n_features, n_outputs = V.shape
    if not 1 <= n_outputs <= MAX_OUTPUTS:
        raise ValueError(f"the sparse step takes 1 to {MAX_OUTPUTS} outputs (one class tile), got K = {n_outputs}")
    if G.dtype != torch.float32 or tuple(G.shape) != (n_features, n_outputs) or not G.is_contiguous():
        raise ValueError(f"G must be a contiguous float32 ({n_features}, {n_outputs}) array like V")
    for name, vector in (("b", b), ("db", db)):
        if vector.dtype != torch.float32 or tuple(vector.shape) != (n_outputs,):
            raise ValueError(f"{name} must be float32 of shape ({n_outputs},)")
    return n_features, n_outputs


def _check_step_scalars(step_scalars):
    """None, or a float32 row of :data:`STEP_SCALARS` values (a table row the kernels read their scalars from)."""
    if step_scalars is not None and (step_scalars.dtype != torch.float32 or step_scalars.numel() < STEP_SCALARS):
        raise ValueError(f"step_scalars must be a float32 vector of {STEP_SCALARS} values")


def launch_sparse_sgd_grad(rows, indptr, indices, data, y, V, b, G, db, loss, *, model, x_scale, logit_scale=None,
                           sample_weight=None, step_scalars=None):
    """Launch :func:`sparse_sgd_grad_kernel` on the batch ``rows`` (B,) of the CSR rows ``(indptr, indices, data)``.

    ``y``: int class ids (N,) for ``model="softmax"``, {0, 1} targets (N, K) (uint8 or float32) for ``"sigmoid"`` and
    ``"sigmoid_mse"``; ``loss`` a float64 (1,) accumulator; ``sample_weight`` float32 (N,) or None;
    the logit scale ``s·x_scale`` as ``logit_scale`` or, in its place, the first value of ``step_scalars`` (a
    :data:`STEP_SCALARS` float32 table row). Only shapes are read: the launch never synchronises.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    n_features, n_outputs = _check_params(V, b, G, db)
    _check_csr(indptr, indices, data, n_features)
    n_rows = indptr.shape[0] - 1
    if rows.ndim != 1 or rows.dtype not in _INDEX_DTYPES:
        raise ValueError("rows must be a 1-D int32 or int64 array")
    expected_y = (n_rows,) if model == "softmax" else (n_rows, n_outputs)
    if tuple(y.shape) != expected_y or not y.is_contiguous():
        raise ValueError(f"y must be a contiguous array of shape {expected_y} for model={model!r}")
    if sample_weight is not None and (sample_weight.dtype != torch.float32 or tuple(sample_weight.shape) != (n_rows,)):
        raise ValueError(f"sample_weight must be float32 of shape ({n_rows},)")
    if loss.dtype != torch.float64 or loss.numel() != 1:
        raise ValueError("loss must be a float64 (1,) accumulator")
    _check_step_scalars(step_scalars)
    if (logit_scale is None) == (step_scalars is None):
        raise ValueError("pass the logit scale as logit_scale or in step_scalars, one of them")
    batch_size = rows.shape[0]
    block_b, block_k = sparse_tile_shape(n_outputs)
    sparse_sgd_grad_kernel[(max(1, triton.cdiv(batch_size, block_b)),)](
        rows_ptr=rows, indptr_ptr=indptr, indices_ptr=indices, data_ptr=data, y_ptr=y,
        sample_weight_ptr=sample_weight, V_ptr=V, b_ptr=b, G_ptr=G, db_ptr=db, loss_ptr=loss,
        step_scalars_ptr=step_scalars, B=batch_size, K=n_outputs, logit_scale=float(logit_scale or 0.0),
        x_scale=float(x_scale), grad_scale=1.0 / max(1, batch_size), SOFTMAX=model == "softmax",
        SIGMOID_LOSS=SIGMOID_LOSSES.get(model, "bce"), BLOCK_B=block_b, BLOCK_K=block_k, num_warps=NUM_WARPS,
        **LAUNCH_OPTIONS,
    )


def launch_sparse_sgd_update(rows, indptr, indices, V, G, owner, b, db, *, step=None, weight_step=0.0, bias_step=0.0,
                             fit_intercept, step_scalars=None):
    """Launch :func:`sparse_sgd_update_kernel`: the rows of ``V`` the batch ``rows`` touches take
    ``V[j] −= weight_step·G[j]`` and ``G[j] = 0``; ``b −= bias_step·db`` (with ``fit_intercept``), ``db = 0``.

    ``owner`` is an int32 (D,) array that never holds ``step`` (a positive id, new every step) before the launch.
    Given ``step_scalars`` (a :data:`STEP_SCALARS` float32 table row), the kernel reads ``weight_step``,
    ``bias_step`` and ``step`` (its int32 bits) from values 1 to 3 instead of the arguments.
    """
    n_features, n_outputs = _check_params(V, b, G, db)
    if owner.dtype != torch.int32 or tuple(owner.shape) != (n_features,):
        raise ValueError(f"owner must be int32 of shape ({n_features},)")
    _check_step_scalars(step_scalars)
    if step_scalars is None and not (step is not None and 0 < step < 2**31):
        raise ValueError(f"step must be a positive int32 id, got {step}")
    block_b, block_k = sparse_tile_shape(n_outputs)
    # At least one program: program 0 updates the bias even for an empty batch.
    sparse_sgd_update_kernel[(max(1, triton.cdiv(rows.shape[0], block_b)),)](
        rows_ptr=rows, indptr_ptr=indptr, indices_ptr=indices, V_ptr=V, G_ptr=G, owner_ptr=owner, b_ptr=b,
        db_ptr=db, step_scalars_ptr=step_scalars, B=rows.shape[0], K=n_outputs,
        step=1 if step_scalars is not None else int(step), weight_step=float(weight_step),
        bias_step=float(bias_step), FIT_INTERCEPT=bool(fit_intercept), BLOCK_B=block_b, BLOCK_K=block_k,
        num_warps=NUM_WARPS, **LAUNCH_OPTIONS,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: the checkable core (no update), the step kernel over all N rows
# ---------------------------------------------------------------------------------------------------------------------


def sparse_loss_grad(indptr, indices, data, y, V, b, *, model, x_scale=1.0, sample_weight=None):
    """Summed weighted loss and mean gradient over all rows of the CSR matrix, through :func:`sparse_sgd_grad_kernel`.

    Returns ``(loss_sum, dW, db)``: the fp64 (1,) summed loss, ``dW`` (D, K) and ``db`` (K,) with
    ``dZ_i = w_i (P_i − Y_i)/N``.
    """
    rows = torch.arange(indptr.shape[0] - 1, device=V.device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=V.device)
    dW, db = torch.zeros_like(V), torch.zeros_like(b)
    launch_sparse_sgd_grad(rows, indptr, indices, data, y, V, b, dW, db, loss_sum, model=model, logit_scale=x_scale,
                           x_scale=x_scale, sample_weight=sample_weight)
    return loss_sum, dW, db
