"""Device helpers and compile options shared by the SGD kernels: row gather, X tiles, gradient accumulation,
the losses with their derivatives on a logits tile and the update rule on a parameter tile (so the epoch kernels
compute exactly the step kernels' math).
"""

import triton
import triton.language as tl

# (BLOCK_D, BLOCK_N) tiles of W and dW on the tl.dot paths (N: classes or sigmoid outputs). The fp32 tl.dot and the
# atomics keep the tiles in registers, so registers grow with BLOCK_D·BLOCK_N: 64 × 16 (tl.dot's minimum N) with a
# double-buffered feature loop up to 16 outputs, 32 × 64 in one stage beyond. The deterministic read-add-write of a
# partial tile needs more registers, so wide deterministic tiles take half the features.
NARROW_BLOCK_D, NARROW_BLOCK_N, NARROW_NUM_STAGES = 64, 16, 2
WIDE_BLOCK_D, WIDE_BLOCK_N, WIDE_NUM_STAGES = 32, 64, 1
WIDE_DETERMINISTIC_BLOCK_D = 16
# Compile options every launch states rather than inherits: whether a*b + c contracts to one FMA changes the last bit
# of every logit and update, and Triton's default could change with a release (the tolerance table was set with FMA).
LAUNCH_OPTIONS = {"enable_fp_fusion": True}


def dot_tile_shape(n_outputs: int, deterministic: bool) -> tuple[int, int, int]:
    """``(BLOCK_D, BLOCK_N, num_stages)`` of the tl.dot path for ``n_outputs`` outputs and the reduction mode."""
    if n_outputs <= NARROW_BLOCK_N:
        return NARROW_BLOCK_D, NARROW_BLOCK_N, NARROW_NUM_STAGES
    return WIDE_DETERMINISTIC_BLOCK_D if deterministic else WIDE_BLOCK_D, WIDE_BLOCK_N, WIDE_NUM_STAGES


@triton.jit
def row_block_lanes(block, BLOCK_B: tl.constexpr):
    """Positions ``block·BLOCK_B … + BLOCK_B − 1`` of row block ``block`` in the minibatch, as int64: the
    probability stores multiply them by C, and N·C passes 2^31 in a ``predict_proba`` over 10^6 rows of 32768 classes.
    """
    return block.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)


@triton.jit
def load_rows(rows_ptr, sample_weight_ptr, lanes, B):
    """The minibatch rows at positions ``lanes``: ``row`` (int64 indices into X, 0 on masked lanes), ``row_mask``
    (lane < B) and ``weight`` (the sample weight, 1 without ``sample_weight_ptr``; 0 on masked lanes, adding nothing).
    """
    row_mask = lanes < B
    # int64 before multiplying by the row stride: N·D passes 2^31 for large data sets.
    row = tl.load(rows_ptr + lanes, mask=row_mask, other=0).to(tl.int64)
    if sample_weight_ptr is not None:
        weight = tl.load(sample_weight_ptr + row, mask=row_mask, other=0.0).to(tl.float32)
    else:
        weight = tl.where(row_mask, 1.0, 0.0)
    return row, row_mask, weight


@triton.jit
def load_row_block(rows_ptr, y_ptr, sample_weight_ptr, lanes, B):
    """:func:`load_rows` and each row's one label ``y`` (as stored; 0 on masked lanes): ``row, row_mask, y, weight``."""
    row, row_mask, weight = load_rows(rows_ptr, sample_weight_ptr, lanes, B)
    y = tl.load(y_ptr + row, mask=row_mask, other=0)
    return row, row_mask, y, weight


@triton.jit
def load_x_block(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D: tl.constexpr):
    """``X[row, d0:d0+BLOCK_D]`` in X's own dtype, padded feature columns and masked rows 0: a tile kept for a row
    block stays narrow (uint8 takes a quarter of float32's registers) and is widened where used, exactly.
    """
    cols = d0 + tl.arange(0, BLOCK_D)
    mask = row_mask[:, None] & (cols < D)[None, :]
    return tl.load(X_ptr + row[:, None] * stride_xn + cols[None, :], mask=mask, other=0)


@triton.jit
def load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D: tl.constexpr):
    """``X[row, d0:d0+BLOCK_D]`` as float32 (exact for uint8, bf16, fp16), padded feature columns and masked rows 0."""
    return load_x_block(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D).to(tl.float32)


@triton.jit
def param_tile(base_ptr, d0, c0, D, C, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, MASK_FEATURES: tl.constexpr):
    """Pointers and mask of the (BLOCK_D, BLOCK_C) tile ``[d0 :, c0 :]`` of a row-major (D, C) matrix (W or dW).

    The scalar offset d0·C + c0 is added to one shared tile of offsets, else every unrolled chunk would get its own
    loop-invariant pointer and mask tiles, hoisted into registers. Features need a mask only in a chunk that may pass D.
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
    """Add ``value`` into the gradient buffer at ``ptrs``: float atomics (fast; the rounding varies run to run), or
    a read-add-write of this program's own partial slice (deterministic), overwritten at visit 0 so no memset is
    needed; the update kernel sums the slices in a fixed order.
    """
    if DETERMINISTIC:
        # The previous visit's store of an element may have come from another thread (``value``'s layout need not
        # match): the barrier makes every thread's earlier global stores visible before any is read back.
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
    # Σ exp(z − m_new) = exp(m − m_new)·Σ exp(z − m): every exponent ≤ 0, so logits of ±1e4 stay finite; m starts at
    # −inf and exp(−inf) = 0 (the first tile always holds a real class).
    s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
    z_target += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
    return m_new, s, z_target


@triton.jit
def softmax_dz(z, y, m, inv_s, row_scale, c0, BLOCK_C: tl.constexpr):
    """``(P, dZ)`` of one class tile: ``p = exp(z − m)/s``, ``dz_ic = row_scale_i (p_ic − [c = y_i])``.

    ``row_scale`` is ``w_i / B`` (0 on masked rows); padded classes (logit −inf) give p = 0. Not exp(z − lse): at
    logits of 1e4, lse = m + log s rounded to fp32 is off by up to 5e-4, and so would p be.
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
    """The sigmoid models' ``(w·ℓ, w·dz/B, σ(z))`` elementwise on logits ``z``; ``weight`` broadcasts against ``z``
    and is 0 on masked rows and padded outputs."""
    # e = e^{−|z|} ∈ (0, 1], the only exponential: logits of ±1e4 stay finite. σ(z) = 1/(1+e) (z ≥ 0), e/(1+e) (z < 0).
    e = tl.exp(-tl.abs(z))
    p = tl.where(z >= 0, 1.0, e) / (1.0 + e)
    if LOSS == "mse":
        # ℓ = (σ − y)², ∂ℓ/∂z = 2(σ − y)σ' with σ' = e/(1+e)² for either sign of z (no cancellation in 1 − σ).
        error = p - y
        loss = error * error
        dz = 2.0 * error * (e / ((1.0 + e) * (1.0 + e)))
    else:
        # ℓ = −y log σ(z) − (1−y) log(1−σ(z)) = max(z,0) − z·y + log1p(e),  ∂ℓ/∂z = σ(z) − y.
        loss = tl.maximum(z, 0.0) - z * y + log1p_small(e)
        dz = p - y
    return loss * weight, dz * (weight * grad_scale), p


@triton.jit
def load_targets(y_ptr, row, row_mask, K, BLOCK_K: tl.constexpr, LOSS: tl.constexpr):
    """The rows' targets for ``LOSS``: (BLOCK_B,) int32 class ids (softmax), else the (BLOCK_B, BLOCK_K) fp32 rows of
    the contiguous (N, K) target matrix; 0 on masked rows and padded outputs."""
    if LOSS == "softmax":
        y = tl.load(y_ptr + row, mask=row_mask, other=0).to(tl.int32)
    else:
        outputs = tl.arange(0, BLOCK_K)
        y = tl.load(y_ptr + row[:, None] * K + outputs[None, :], mask=row_mask[:, None] & (outputs < K)[None, :],
                    other=0).to(tl.float32)
    return y


@triton.jit
def row_block_loss_dz(z, y, weight, grad_scale, K, BLOCK_K: tl.constexpr, LOSS: tl.constexpr):
    """A row block's weighted loss (a scalar) and ``dZ = w_i ∂ℓ_i/∂Z_i · grad_scale`` (BLOCK_B, BLOCK_K) from its
    logits ``z``, for ``LOSS`` "softmax" (cross-entropy), "bce" or "mse" (sigmoid outputs); ``y`` as
    :func:`load_targets` gives it."""
    outputs = tl.arange(0, BLOCK_K)
    output_mask = outputs < K
    if LOSS == "softmax":
        # Padded classes are −inf logits: no probability, no loss.
        z = tl.where(output_mask[None, :], z, float("-inf"))
        m = tl.full((z.shape[0],), float("-inf"), dtype=tl.float32)
        s = tl.zeros((z.shape[0],), dtype=tl.float32)
        m, s, z_target = online_logsumexp(m, s, tl.zeros((z.shape[0],), dtype=tl.float32), z, y, 0, BLOCK_K)
        # CE_i = (m_i − z_{i,y_i}) + log s_i, the difference first (m and z_y may be 1e4 while CE is small).
        loss = tl.sum(((m - z_target) + tl.log(s)) * weight, axis=0)
        _, dz = softmax_dz(z, y, m, 1.0 / s, weight * grad_scale, 0, BLOCK_K)
    else:
        # Padded outputs weigh 0, as masked rows do.
        tile_weight = weight[:, None] * tl.where(output_mask, 1.0, 0.0)[None, :]
        losses, dz, _ = sigmoid_loss_and_dz(z, y, tile_weight, grad_scale, LOSS)
        loss = tl.sum(tl.sum(losses, axis=1), axis=0)
    return loss, dz


@triton.jit
def gradient_start(param, velocity, l2, momentum, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr):
    """What a step's gradient accumulator starts from before the data term: ``l2·θ``, plus ``μ·v`` for heavy-ball
    momentum so that it sums to the new v (Nesterov needs g alone); the bias passes ``l2 = 0``."""
    if MOMENTUM and not NESTEROV:
        start = momentum * velocity + l2 * param
    else:
        start = l2 * param
    return start


@triton.jit
def sgd_rule(param, accumulated, velocity, learning_rate, momentum, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr):
    """``sgd_update_kernel``'s rule on a tile, from the step's gradient accumulated from :func:`gradient_start`;
    returns ``(θ, v)``.

    Heavy-ball momentum accumulated ``μ v + g`` (the new v): ``θ ← θ − lr·v``. Nesterov accumulated g:
    ``v ← μ v + g``, ``θ ← θ − lr·(g + μ v)``. Plain SGD accumulated g: ``θ ← θ − lr·g``.
    """
    if MOMENTUM:
        if NESTEROV:
            velocity = momentum * velocity + accumulated
            step = accumulated + momentum * velocity
        else:
            velocity = accumulated
            step = velocity
    else:
        step = accumulated
    return param - learning_rate * step, velocity
