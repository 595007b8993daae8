"""One fused kernel for the loss and gradient of binary logistic regression on a minibatch given as row indices.

For the minibatch rows ``r`` and targets ``y ∈ {0, 1}``::

    z   = s·X[r] w + b                               (B,), fp32 accumulation
    BCE = max(z, 0) − z·y + log1p(exp(−|z|))          from logits, never log(σ(z))
    dz  = w_i (σ(z) − y) / B
    dw += s·X[r]ᵀ dz,   db += Σ dz,   loss += Σ w_i BCE_i

Same structure as ``softmax_sgd.py`` (shared helpers in ``_tiles.py``: row gather, X tiles, gradient accumulation),
with K = 1: the logits are a row reduction rather than a tl.dot, so there is no class tile and no padding. The
parameter layout ``theta = [w (D,), b]`` is the softmax one with C = 1, and ``sgd_update.py`` serves both.

Bytes moved per step at B=128, D=784: X[r] once (401 KB float32, 100 KB uint8), w once per program, dw atomics
(3 KB per program), no B-sized intermediate written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._tiles import accumulate, add_loss, load_row_block, load_x_tile

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Rows per program: 16 rows × 1024 resident fp32 features is 64 registers per thread with 8 warps (as for softmax),
# and there is no tl.dot minimum to respect, but fewer rows would multiply the dw atomics.
BLOCK_B = 16
# Largest padded D whose X tile stays in registers for both the forward and the backward reduction.
RESIDENT_D_MAX = 1024
# Feature chunk when streaming wider inputs.
STREAM_BLOCK_D = 512
NUM_WARPS_RESIDENT = 8
NUM_WARPS_STREAM = 4


@dataclass(frozen=True)
class SigmoidConfig:
    """Compile-time tile shape of :func:`sigmoid_sgd_kernel` for one D."""

    block_b: int
    block_d: int
    x_resident: bool
    num_warps: int

    @property
    def label(self) -> str:
        mode = "resident" if self.x_resident else "streamed"
        return f"B{self.block_b} D{self.block_d} X {mode}, {self.num_warps} warps"


def sigmoid_config(n_features: int) -> SigmoidConfig:
    """The tile shape shipped for ``D = n_features``."""
    d_pad = max(16, triton.next_power_of_2(n_features))
    x_resident = d_pad <= RESIDENT_D_MAX
    return SigmoidConfig(
        block_b=BLOCK_B, block_d=d_pad if x_resident else STREAM_BLOCK_D, x_resident=x_resident,
        num_warps=NUM_WARPS_RESIDENT if x_resident else NUM_WARPS_STREAM,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _log1p_small(e):
    """log(1 + e) for 0 ≤ e ≤ 1, accurate when e is tiny (where log(1 + e) rounds to 0).

    With u = fl(1 + e), log(u)·e / (u − 1) corrects the rounding of u (Goldberg); u = 1 means log1p(e) = e.
    """
    u = 1.0 + e
    rounded_away = u == 1.0
    return tl.where(rounded_away, e, tl.log(u) * (e / tl.where(rounded_away, 1.0, u - 1.0)))


@triton.jit
def sigmoid_sgd_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, theta_ptr, grad_ptr, loss_ptr, probs_ptr,
    B, D, x_scale, grad_scale, blocks_per_program,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, X_RESIDENT: tl.constexpr, DETERMINISTIC: tl.constexpr,
    HAS_SAMPLE_WEIGHT: tl.constexpr, STORE_PROBS: tl.constexpr,
):
    """Loss and gradient of logistic regression over ``rows[:B]``; buffers as in ``softmax_sgd_kernel`` with C = 1."""
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    if DETERMINISTIC:
        grad_ptr += pid.to(tl.int64) * (D + 1)  # this program's own partial slice
    loss_total = tl.zeros((), dtype=tl.float32)
    bias = tl.load(theta_ptr + D)
    for visit in range(0, blocks_per_program):
        # 1. Gather the row block.
        lanes = (pid + visit * n_programs) * BLOCK_B + tl.arange(0, BLOCK_B)
        row, row_mask, y, weight = load_row_block(rows_ptr, y_ptr, sample_weight_ptr, lanes, B, HAS_SAMPLE_WEIGHT)
        y = y.to(tl.float32)

        # 2. Logits z = s·(x · w) + b, X[rows] read once when resident.
        if X_RESIDENT:
            feats = tl.arange(0, BLOCK_D)
            x = load_x_tile(X_ptr, stride_xn, row, row_mask, 0, D, BLOCK_D)
            w = tl.load(theta_ptr + feats, mask=feats < D, other=0.0)
            xw = tl.sum(x * w[None, :], axis=1)
        else:
            xw = tl.zeros((BLOCK_B,), dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                feats = d0 + tl.arange(0, BLOCK_D)
                x_chunk = load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D)
                w = tl.load(theta_ptr + feats, mask=feats < D, other=0.0)
                xw += tl.sum(x_chunk * w[None, :], axis=1)
        z = xw * x_scale + bias

        # 3. BCE from logits: −y log σ(z) − (1−y) log(1−σ(z)) = max(z,0) − z·y + log1p(e^{−|z|}); e ≤ 1 never overflows.
        e = tl.exp(-tl.abs(z))
        loss_total += tl.sum((tl.maximum(z, 0.0) - z * y + _log1p_small(e)) * weight, axis=0)

        # 4. dz = σ(z) − y, with σ(z) = 1/(1+e) for z ≥ 0 and e/(1+e) for z < 0 (both from e = e^{−|z|}).
        p = tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if STORE_PROBS:
            tl.store(probs_ptr + lanes, p, mask=row_mask)
        dz = (p - y) * (weight * grad_scale)
        dz_scaled = dz * x_scale  # dw = (s·X)ᵀ dz = Xᵀ (s·dz)

        # 5. dw = Xᵀ (s·dz), db = Σ dz.
        if X_RESIDENT:
            accumulate(grad_ptr + feats, tl.sum(x * dz_scaled[:, None], axis=0), feats < D, visit, DETERMINISTIC)
        else:
            for d0 in range(0, D, BLOCK_D):
                feats = d0 + tl.arange(0, BLOCK_D)
                x_chunk = load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D)
                accumulate(grad_ptr + feats, tl.sum(x_chunk * dz_scaled[:, None], axis=0), feats < D, visit,
                           DETERMINISTIC)
        one = tl.arange(0, 1)  # db as a 1-element tile so it takes the same accumulate path
        accumulate(grad_ptr + D + one, tl.sum(dz, axis=0) + tl.zeros((1,), dtype=tl.float32), one < 1, visit,
                   DETERMINISTIC)
    # 6. This program's summed loss.
    add_loss(loss_ptr, pid, loss_total, DETERMINISTIC)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------------------------------


def launch_sigmoid_sgd(X, rows, y, theta, grad, loss, *, x_scale, grad_scale, config, max_programs=None,
                       deterministic=False, sample_weight=None, probs=None):
    """Launch :func:`sigmoid_sgd_kernel` on the minibatch ``rows``; buffers as in ``launch_softmax_sgd`` with C = 1."""
    n_rows, n_features = X.shape
    n_params = n_features + 1
    if X.stride(1) != 1:
        raise ValueError("X must have contiguous rows (X.stride(1) == 1)")
    if theta.dtype != torch.float32 or theta.numel() != n_params:
        raise ValueError(f"theta must be float32 with D + 1 = {n_params} values")
    batch = rows.shape[0]
    n_blocks = triton.cdiv(batch, config.block_b)
    n_programs = n_blocks if max_programs is None else max(1, min(max_programs, n_blocks))
    if grad.numel() < (n_programs if deterministic else 1) * n_params:
        raise ValueError("grad is smaller than one slice per program")
    sigmoid_sgd_kernel[(n_programs,)](
        X, X.stride(0), rows, y, sample_weight if sample_weight is not None else theta,
        theta, grad, loss, probs if probs is not None else theta,
        batch, n_features, float(x_scale), float(grad_scale), triton.cdiv(n_blocks, n_programs),
        BLOCK_B=config.block_b, BLOCK_D=config.block_d, X_RESIDENT=config.x_resident, DETERMINISTIC=deterministic,
        HAS_SAMPLE_WEIGHT=sample_weight is not None, STORE_PROBS=probs is not None, num_warps=config.num_warps,
    )
    return n_programs


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: the checkable core (no update), same kernel over all N rows
# ---------------------------------------------------------------------------------------------------------------------


def sigmoid_loss_grad(X, y, theta, *, x_scale=1.0, deterministic=False, sample_weight=None, return_probs=False):
    """Mean BCE over all rows of ``X`` and its gradient, through :func:`sigmoid_sgd_kernel`.

    Returns ``(loss_sum, grad, probs)``: the fp64 (1,) summed loss, the flat (D + 1,) mean gradient ``[dw, db]`` and
    the (N,) probabilities σ(z) (``None`` unless ``return_probs``).
    """
    from .sgd_update import launch_sgd_update, max_partials

    n_rows, n_features = X.shape
    n_params = n_features + 1
    config = sigmoid_config(n_features)
    rows = torch.arange(n_rows, device=X.device)
    probs = torch.empty(n_rows, dtype=torch.float32, device=X.device) if return_probs else None
    loss_sum = torch.zeros(1, dtype=torch.float64, device=X.device)
    n_blocks = triton.cdiv(n_rows, config.block_b)
    if deterministic:
        n_programs = max_partials(n_params, n_blocks)
        partials = torch.empty((n_programs, n_params), dtype=torch.float32, device=X.device)
        loss_partials = torch.empty(n_programs, dtype=torch.float32, device=X.device)
        n_programs = launch_sigmoid_sgd(X, rows, y, theta, partials, loss_partials, x_scale=x_scale,
                                        grad_scale=1.0 / n_rows, config=config, max_programs=n_programs,
                                        deterministic=True, sample_weight=sample_weight, probs=probs)
        grad = torch.empty(n_features + 1, dtype=torch.float32, device=X.device)
        launch_sgd_update(theta, partials, n_weights=n_features, deterministic=True, n_partials=n_programs,
                          loss_partials=loss_partials, loss_sum=loss_sum, grad_out=grad)
    else:
        grad = torch.zeros(n_features + 1, dtype=torch.float32, device=X.device)
        launch_sigmoid_sgd(X, rows, y, theta, grad, loss_sum, x_scale=x_scale, grad_scale=1.0 / n_rows,
                           config=config, sample_weight=sample_weight, probs=probs)
    return loss_sum, grad, probs
