"""Device helpers shared by the softmax and the sigmoid SGD kernels.

Both step kernels walk the same minibatch the same way: a program takes blocks of ``BLOCK_B`` minibatch rows,
gathers their row indices, labels and weights, loads tiles of ``X[rows]`` and adds its share of the gradient into a
buffer, by atomics (fast) or into its own partial slice (deterministic). Their tl.dot paths also share one choice of
tile shape (:func:`dot_tile_shape`). The losses and their derivatives on a logits tile (softmax cross-entropy,
sigmoid BCE / squared error) are here too, because the single-launch epoch kernel (``epoch_sgd.py``) computes exactly
the same math as the step kernels.
"""

import triton
import triton.language as tl

# (BLOCK_D, BLOCK_N) tiles of W and dW on the tl.dot paths, N being the outputs (classes, or sigmoid outputs), chosen
# by compiling for sm_80 / sm_90 (linclass-gpu kernels report): the fp32 tl.dot and the atomics keep the tiles in
# registers, so registers grow with BLOCK_D·BLOCK_N. 64 × 16 serves up to 16 outputs (tl.dot's minimum N), with two
# software-pipelining stages (cp.async double buffering of the feature loop): ~121 registers. 32 × 64 serves wider
# outputs in one stage, as they already hold 64 outputs' worth of W and dW: 98–146 registers. 64 × 64 and 128 × 16
# reach 255 registers with spills. The deterministic read-add-write of a partial tile costs more: 32 × 64 reached 255
# and spilled on sm_90, so wide deterministic tiles take half the features (16 × 64: ~110 registers).
NARROW_BLOCK_D, NARROW_BLOCK_N, NARROW_NUM_STAGES = 64, 16, 2
WIDE_BLOCK_D, WIDE_BLOCK_N, WIDE_NUM_STAGES = 32, 64, 1
WIDE_DETERMINISTIC_BLOCK_D = 16


def dot_tile_shape(n_outputs: int, deterministic: bool) -> tuple[int, int, int]:
    """``(BLOCK_D, BLOCK_N, num_stages)`` of the tl.dot path for ``n_outputs`` outputs and the reduction mode."""
    if n_outputs <= NARROW_BLOCK_N:
        return NARROW_BLOCK_D, NARROW_BLOCK_N, NARROW_NUM_STAGES
    return WIDE_DETERMINISTIC_BLOCK_D if deterministic else WIDE_BLOCK_D, WIDE_BLOCK_N, WIDE_NUM_STAGES



@triton.jit
def row_block_lanes(block, BLOCK_B: tl.constexpr):
    """Positions ``block·BLOCK_B … + BLOCK_B − 1`` of row block ``block`` in the minibatch, as int64.

    int64 because they are multiplied by C or K for the (B, C) probability stores: in ``predict_proba`` one launch
    covers all N rows, and N·C passes 2^31 (e.g. N = 10^6, C = 32768), where int32 offsets would wrap and write out
    of bounds.
    """
    return block.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)


@triton.jit
def load_rows(rows_ptr, sample_weight_ptr, lanes, B, HAS_SAMPLE_WEIGHT: tl.constexpr):
    """Gather the minibatch rows at positions ``lanes`` (one block of ``BLOCK_B`` consecutive positions).

    Returns ``row`` (int64 indices into X, 0 on masked lanes), ``row_mask`` (lane < B) and ``weight`` (the row's
    sample weight; 0 on masked lanes, so padded rows add nothing to any sum).
    """
    row_mask = lanes < B
    # int64 before multiplying by the row stride: N·D passes 2^31 for large data sets.
    row = tl.load(rows_ptr + lanes, mask=row_mask, other=0).to(tl.int64)
    if HAS_SAMPLE_WEIGHT:
        weight = tl.load(sample_weight_ptr + row, mask=row_mask, other=0.0).to(tl.float32)
    else:
        weight = tl.where(row_mask, 1.0, 0.0)
    return row, row_mask, weight


@triton.jit
def load_row_block(rows_ptr, y_ptr, sample_weight_ptr, lanes, B, HAS_SAMPLE_WEIGHT: tl.constexpr):
    """:func:`load_rows` and each row's one label ``y`` (as stored; 0 on masked lanes): ``row, row_mask, y, weight``."""
    row, row_mask, weight = load_rows(rows_ptr, sample_weight_ptr, lanes, B, HAS_SAMPLE_WEIGHT)
    y = tl.load(y_ptr + row, mask=row_mask, other=0)
    return row, row_mask, y, weight


@triton.jit
def load_x_block(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D: tl.constexpr):
    """``X[row, d0:d0+BLOCK_D]`` in X's own dtype, padded feature columns and masked rows 0.

    A tile kept for a whole row block stays in the input dtype: 16 × 1024 uint8 pixels are 16 KB of registers where
    their float32 copy would be 64 KB. Convert at the point of use (``.to(tl.float32)``), which is exact.
    """
    cols = d0 + tl.arange(0, BLOCK_D)
    mask = row_mask[:, None] & (cols < D)[None, :]
    return tl.load(X_ptr + row[:, None] * stride_xn + cols[None, :], mask=mask, other=0)


@triton.jit
def load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D: tl.constexpr):
    """``X[row, d0:d0+BLOCK_D]`` as float32, padded feature columns and masked rows 0.

    Conversion happens in registers: uint8 pixels are exact in float32 and the input scale is applied to the much
    smaller logits / dZ tiles instead, bf16/fp16 widen exactly. Accumulation is therefore fp32 for every dtype.
    """
    return load_x_block(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D).to(tl.float32)


@triton.jit
def param_tile(base_ptr, d0, c0, D, C, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, MASK_FEATURES: tl.constexpr):
    """Pointers and mask of the (BLOCK_D, BLOCK_C) tile ``[d0 :, c0 :]`` of a row-major (D, C) matrix (W or dW).

    The scalar offset d0·C + c0 is added before the tile of offsets, so within a class loop the only loop-invariant
    tensor is that one tile: written as ``feats[:, None]·C + cols[None, :]`` with a static d0, each of the 25
    unrolled chunks had its own invariant pointer and mask tiles, hoisted out of the class loop by the compiler, which
    filled all 255 registers and spilled 24–416 B. Features need a mask only in a chunk that may pass D.
    """
    offsets = tl.arange(0, BLOCK_D)[:, None] * C + tl.arange(0, BLOCK_C)[None, :]
    col_mask = (c0 + tl.arange(0, BLOCK_C)) < C
    if MASK_FEATURES:
        mask = ((d0 + tl.arange(0, BLOCK_D)) < D)[:, None] & col_mask[None, :]
    else:
        mask = tl.broadcast_to(col_mask[None, :], (BLOCK_D, BLOCK_C))
    return base_ptr + (d0 * C + c0) + offsets, mask


@triton.jit
def accumulate(ptrs, value, mask, visit, DETERMINISTIC: tl.constexpr):
    """Add ``value`` into the gradient buffer at ``ptrs``.

    Fast mode: float atomics into one shared buffer; the order of the additions, hence the rounding, varies run to
    run. Deterministic mode: ``ptrs`` point into this program's own partial slice, which no other program touches, so
    a plain read-add-write is race free; visit 0 (the program's first row block) overwrites, so no memset launch
    is needed, later visits add. The
    slices are summed in a fixed order by the update kernel.
    """
    if DETERMINISTIC:
        # The value read here was stored at the previous visit by whichever thread held that element then: ``value``
        # may sit in a replicated or differently distributed layout, so it need not be this thread. Triton orders
        # only its own shared-memory traffic; this barrier makes every thread's earlier global stores visible to the
        # whole program (bar.sync) before any thread reads them back.
        tl.debug_barrier()
        previous = tl.load(ptrs, mask=mask & (visit > 0), other=0.0)
        tl.store(ptrs, previous + value, mask=mask)
    else:
        tl.atomic_add(ptrs, value, mask=mask, sem="relaxed")


@triton.jit
def add_loss(loss_ptr, pid, loss, DETERMINISTIC: tl.constexpr):
    """Add this program's summed row losses to the device loss: atomically (fast) or into its own slot."""
    if DETERMINISTIC:
        tl.store(loss_ptr + pid, loss)
    else:
        tl.atomic_add(loss_ptr, loss.to(tl.float64), sem="relaxed")


@triton.jit
def online_logsumexp(m, s, z_target, z, y, c0, BLOCK_C: tl.constexpr):
    """Fold one logits tile into the running row max ``m``, sum ``s = Σ exp(z − m)`` and target logit."""
    cols = c0 + tl.arange(0, BLOCK_C)
    m_new = tl.maximum(m, tl.max(z, axis=1))
    # Σ exp(z − m_new) = exp(m − m_new)·Σ exp(z − m): rescale the old sum, add the new tile. Every exponent is ≤ 0, so
    # logits of ±1e4 stay finite; m starts at −inf and exp(−inf) = 0 (the first tile always holds a real class).
    s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
    z_target += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
    return m_new, s, z_target


@triton.jit
def softmax_dz(z, y, m, inv_s, row_scale, c0, BLOCK_C: tl.constexpr):
    """``(P, dZ)`` of one class tile: ``p = exp(z − m)/s``, ``dz_ic = row_scale_i (p_ic − [c = y_i])``.

    ∂CE_i/∂z_ic = p_ic − [c = y_i]; padded classes (logit −inf) give exp(−inf) = 0 and no one-hot. Not exp(z − lse):
    at logits of 1e4, lse = m + log s rounded to fp32 is off by up to 5e-4, and so would p be. ``row_scale`` is
    ``w_i / B`` (the minibatch mean, weighted per row; 0 on masked rows).
    """
    cols = c0 + tl.arange(0, BLOCK_C)
    p = tl.exp(z - m[:, None]) * inv_s[:, None]
    onehot = tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
    return p, (p - onehot) * row_scale[:, None]


@triton.jit
def log1p_small(e):
    """log(1 + e) for 0 ≤ e ≤ 1, accurate when e is tiny (where log(1 + e) rounds to 0).

    With u = fl(1 + e), log(u)·e / (u − 1) corrects the rounding of u (Goldberg); u = 1 means log1p(e) = e.
    """
    u = 1.0 + e
    rounded_away = u == 1.0
    return tl.where(rounded_away, e, tl.log(u) * (e / tl.where(rounded_away, 1.0, u - 1.0)))


@triton.jit
def sigmoid_loss_and_dz(z, y, weight, grad_scale, LOSS: tl.constexpr):
    """The sigmoid models' loss and its derivative, elementwise on logits ``z`` of any shape: ``(w·ℓ, w·dz/B, σ(z))``.

    ``weight`` broadcasts against ``z`` and is 0 on masked rows and padded outputs, which then add nothing.
    """
    # e = e^{−|z|} ∈ (0, 1]: the only exponential, never of a positive number, so logits of ±1e4 stay finite.
    e = tl.exp(-tl.abs(z))
    # σ(z) = 1/(1+e) for z ≥ 0 and e/(1+e) for z < 0: both forms from e.
    p = tl.where(z >= 0, 1.0, e) / (1.0 + e)
    if LOSS == "mse":
        # ℓ = (σ − y)².
        error = p - y
        loss = error * error
        # ∂ℓ/∂z = 2(σ − y)σ', with σ' = σ(1 − σ) = e/(1+e)² for either sign of z (no cancellation in 1 − σ).
        dz = 2.0 * error * (e / ((1.0 + e) * (1.0 + e)))
    else:
        # ℓ = −y log σ(z) − (1−y) log(1−σ(z)) = max(z,0) − z·y + log1p(e).
        loss = tl.maximum(z, 0.0) - z * y + log1p_small(e)
        # ∂ℓ/∂z = σ(z) − y.
        dz = p - y
    # The mean over the minibatch (grad_scale = 1/B), weighted per row.
    return loss * weight, dz * (weight * grad_scale), p
