"""One fused kernel for the loss and gradient of the sigmoid models on a minibatch given as row indices.

``K`` independent sigmoids (K = 1: binary; K > 1: multilabel or one-vs-rest) with the loss ``LOSS``, for the
minibatch rows ``r`` and targets ``Y ∈ {0, 1}`` of shape (N, K)::

    Z   = s·X[r] W + b                                   (B, K), fp32 accumulation whatever X's dtype
    "bce":  ℓ = max(z, 0) − z·y + log1p(exp(−|z|))       from logits, never log σ(z)
            dz = σ(z) − y
    "mse":  ℓ = (σ(z) − y)²
            dz = 2(σ(z) − y)·σ(z)(1 − σ(z))
    dZ  = w_i dz / B                                     w_i = sample weight (1 without)
    dW += s·X[r]ᵀ dZ,   db += Σ_i dZ_i,   loss += Σ_i w_i Σ_k ℓ_ik

Same structure as ``softmax_sgd.py`` (shared helpers in ``_tiles.py``). The outputs are independent, so an output
tile is complete by itself: one sweep, nothing recomputed. Targets are read as stored (e.g. uint8), and ``theta``
has the softmax layout, so ``sgd_update.py`` serves every model. :func:`sigmoid_config` picks how ``X[r]`` is read:

- K ≤ 64 and D ≤ 1024 (binary and one-vs-rest MNIST): one (16, D_pad) tile in X's own dtype, loaded once per row
  block; every output runs over it one column at a time with fp32 FMAs and sums (no tl.dot, no padded outputs).
- K = 1 and D > 1024: the same column, ``X[r]`` streamed in ``BLOCK_D`` chunks by the forward and the backward
  product (a 16-wide tl.dot tile would be 15/16 padding).
- Otherwise tl.dot over (16, BLOCK_K) output tiles, padded outputs masked (W = b = 0, weighted 0). ``X[r]`` stays
  resident as an fp32 tile when D ≤ BLOCK_D, else each output tile streams it twice (re-read from L2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._launch import loss_grad_over_rows, step_arguments
from ._tiles import (
    accumulate,
    add_loss,
    dot_tile_shape,
    load_rows,
    load_x_block,
    load_x_tile,
    row_block_lanes,
    sigmoid_loss_and_dz,
)

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# The losses of LOSS, and the model each serves (linclass_gpu.backends.base.MODELS).
MODEL_LOSSES = {"sigmoid": "bce", "sigmoid_mse": "mse"}
# Minibatch rows per program: tl.dot's minimum M (forward) and K (backward) on the tiled path.
BLOCK_B = 16
# Column path: X[rows] resident up to D_pad = 1024 for up to 64 outputs, else (binary) streamed in 512-feature chunks.
# The resident tile runs at 16 warps capped at 128 registers: 8 warps' register file, half the X tile per thread.
RESIDENT_D_MAX = 1024
COLUMNWISE_K_MAX = 64
STREAM_BLOCK_D = 512
NUM_WARPS_RESIDENT = 16
NUM_WARPS_STREAM = 4
RESIDENT_MAX_REGISTERS = 128
# Tiled path (tl.dot): _tiles.dot_tile_shape's tiles, shared with softmax_sgd.py.
NUM_WARPS_TILED = 8
# The resident column loop has no feature loop to pipeline; the streamed one prefetches its next chunk.
RESIDENT_NUM_STAGES = 1
STREAM_NUM_STAGES = 2
# ptxas register cap (.maxnreg) on the streamed and tiled paths, as in softmax_sgd.py.
MAX_REGISTERS = 255
# Runtime arguments that are not int32 or fp32 buffers, typed for the compile report (which sets X's, y's, loss's).
ARG_TYPES = {"rows_ptr": "*i64", "x_scale": "fp32", "grad_scale": "fp32"}


@dataclass(frozen=True)
class SigmoidConfig:
    """Compile-time tile shape of :func:`sigmoid_sgd_kernel` for one (D, K)."""

    block_b: int
    block_d: int
    block_k: int
    x_resident: bool
    columnwise: bool
    num_warps: int
    num_stages: int
    max_registers: int = MAX_REGISTERS

    @property
    def constexprs(self) -> dict:
        """The kernel's tile-shape constexprs, as the launcher and the compile report pass them."""
        return {"BLOCK_B": self.block_b, "BLOCK_D": self.block_d, "BLOCK_K": self.block_k,
                "X_RESIDENT": self.x_resident, "COLUMNWISE": self.columnwise}

    @property
    def label(self) -> str:
        mode = "resident" if self.x_resident else "streamed"
        outputs = "one column at a time" if self.columnwise else "output tiles"
        return (f"B{self.block_b} D{self.block_d} K{self.block_k} X {mode}, {outputs}, {self.num_warps} warps, "
                f"{self.num_stages} stages")


def sigmoid_config(n_features: int, n_outputs: int = 1, deterministic: bool = False) -> SigmoidConfig:
    """The tile shape shipped for ``D = n_features``, ``K = n_outputs`` and the reduction mode."""
    d_pad = max(16, triton.next_power_of_2(n_features))
    if n_outputs <= COLUMNWISE_K_MAX and (d_pad <= RESIDENT_D_MAX or n_outputs == 1):
        x_resident = d_pad <= RESIDENT_D_MAX
        return SigmoidConfig(
            block_b=BLOCK_B, block_d=d_pad if x_resident else STREAM_BLOCK_D,
            block_k=triton.next_power_of_2(n_outputs), x_resident=x_resident, columnwise=True,
            num_warps=NUM_WARPS_RESIDENT if x_resident else NUM_WARPS_STREAM,
            num_stages=RESIDENT_NUM_STAGES if x_resident else STREAM_NUM_STAGES,
            max_registers=RESIDENT_MAX_REGISTERS if x_resident else MAX_REGISTERS,
        )
    block_d, block_k, num_stages = dot_tile_shape(n_outputs, deterministic)
    x_resident = d_pad <= block_d  # few features: one fp32 tile serves both tl.dot products of every output tile
    return SigmoidConfig(
        block_b=BLOCK_B, block_d=d_pad if x_resident else block_d, block_k=block_k, x_resident=x_resident,
        columnwise=False, num_warps=NUM_WARPS_TILED, num_stages=num_stages,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _column_logits(x, X_ptr, stride_xn, row, row_mask, theta_ptr, k, D, K, x_scale,
                   BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, X_RESIDENT: tl.constexpr):
    """Logits column ``k``: ``z_k = s·X[rows] W[:, k] + b_k``, a (BLOCK_B,) fp32 vector; W is ``theta[:D·K]``."""
    if X_RESIDENT:
        feats = tl.arange(0, BLOCK_D)
        w_k = tl.load(theta_ptr + feats * K + k, mask=feats < D, other=0.0)
        xw = tl.sum(x.to(tl.float32) * w_k[None, :], axis=1)
    else:
        xw = tl.zeros((BLOCK_B,), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            feats = d0 + tl.arange(0, BLOCK_D)
            x_chunk = load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D)
            w_k = tl.load(theta_ptr + feats * K + k, mask=feats < D, other=0.0)
            xw += tl.sum(x_chunk * w_k[None, :], axis=1)
    # (s·X) w = s·(X w): the scale multiplies the (B,) column, not the (B, D) tile.
    return xw * x_scale + tl.load(theta_ptr + D * K + k)


@triton.jit
def _column_weight_gradient(x, X_ptr, stride_xn, row, row_mask, dz_scaled, grad_ptr, k, D, K, visit,
                            BLOCK_D: tl.constexpr, X_RESIDENT: tl.constexpr, DETERMINISTIC: tl.constexpr):
    """``dW[:, k] += Xᵀ (s·dz_k)``: a product and a sum over the rows (within a thread first for float32)."""
    if X_RESIDENT:
        feats = tl.arange(0, BLOCK_D)
        accumulate(grad_ptr + feats * K + k, tl.sum(x.to(tl.float32) * dz_scaled[:, None], axis=0), feats < D,
                   visit, DETERMINISTIC)
    else:
        for d0 in range(0, D, BLOCK_D):
            feats = d0 + tl.arange(0, BLOCK_D)
            x_chunk = load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D)
            accumulate(grad_ptr + feats * K + k, tl.sum(x_chunk * dz_scaled[:, None], axis=0), feats < D, visit,
                       DETERMINISTIC)


@triton.jit
def _columnwise_row_block(x, X_ptr, stride_xn, row, row_mask, weight, lanes, y_ptr, theta_ptr, grad_ptr, probs_ptr,
                          D, K, x_scale, grad_scale, visit,
                          BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
                          X_RESIDENT: tl.constexpr, LOSS: tl.constexpr, DETERMINISTIC: tl.constexpr):
    """Steps 2–5 of :func:`sigmoid_sgd_kernel` one output column at a time, up to K (nothing padded); returns the
    row block's weighted loss."""
    loss = tl.zeros((), dtype=tl.float32)
    outputs = tl.arange(0, BLOCK_K)
    db = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k in range(0, K):
        # 2. z_k = s·X[rows] W[:, k] + b_k, and the targets' column k (Y is (N, K) row-major, any dtype).
        z_k = _column_logits(x, X_ptr, stride_xn, row, row_mask, theta_ptr, k, D, K, x_scale, BLOCK_B, BLOCK_D,
                             X_RESIDENT)
        y_k = tl.load(y_ptr + row * K + k, mask=row_mask, other=0).to(tl.float32)
        # 3–4. w_i ℓ_ik and dz_ik = w_i ∂ℓ/∂z_ik / B.
        loss_k, dz_k, p_k = sigmoid_loss_and_dz(z_k, y_k, weight, grad_scale, LOSS)
        loss += tl.sum(loss_k, axis=0)
        if probs_ptr is not None:
            tl.store(probs_ptr + lanes * K + k, p_k, mask=row_mask)
        # 5. dW[:, k] = (s·X)ᵀ dz_k = Xᵀ (s·dz_k), db_k = Σ_i dz_ik.
        _column_weight_gradient(x, X_ptr, stride_xn, row, row_mask, dz_k * x_scale, grad_ptr, k, D, K, visit,
                                BLOCK_D, X_RESIDENT, DETERMINISTIC)
        db = tl.where(outputs == k, tl.sum(dz_k, axis=0), db)
    accumulate(grad_ptr + D * K + outputs, db, outputs < K, visit, DETERMINISTIC)
    return loss


@triton.jit
def _output_tile(x, X_ptr, stride_xn, row, row_mask, weight, lanes, y_ptr, theta_ptr, grad_ptr, probs_ptr, k0,
                 D, K, x_scale, grad_scale, visit,
                 BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, X_RESIDENT: tl.constexpr,
                 LOSS: tl.constexpr, DETERMINISTIC: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Steps 2–5 of :func:`sigmoid_sgd_kernel` on output tile ``k0 : k0 + BLOCK_K`` by tl.dot; returns its loss."""
    outputs = k0 + tl.arange(0, BLOCK_K)
    output_mask = outputs < K
    # 2. Z = s·X[rows] W[:, tile] + b[tile]; padded outputs read W = b = 0, so their logits are 0 (finite).
    if X_RESIDENT:
        feats = tl.arange(0, BLOCK_D)
        w = tl.load(theta_ptr + feats[:, None] * K + outputs[None, :],
                    mask=(feats < D)[:, None] & output_mask[None, :], other=0.0)
        xw = tl.dot(x, w, input_precision=INPUT_PRECISION)
    else:
        xw = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            x_chunk = load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D)
            feats = d0 + tl.arange(0, BLOCK_D)
            w = tl.load(theta_ptr + feats[:, None] * K + outputs[None, :],
                        mask=(feats < D)[:, None] & output_mask[None, :], other=0.0)
            xw = tl.dot(x_chunk, w, xw, input_precision=INPUT_PRECISION)
    bias = tl.load(theta_ptr + D * K + outputs, mask=output_mask, other=0.0)
    z = xw * x_scale + bias[None, :]
    tile_mask = row_mask[:, None] & output_mask[None, :]
    y = tl.load(y_ptr + row[:, None] * K + outputs[None, :], mask=tile_mask, other=0).to(tl.float32)
    # 3–4. Padded outputs weigh 0, as masked rows do: no loss, dz = 0.
    tile_weight = weight[:, None] * tl.where(output_mask, 1.0, 0.0)[None, :]
    loss, dz, p = sigmoid_loss_and_dz(z, y, tile_weight, grad_scale, LOSS)
    if probs_ptr is not None:
        tl.store(probs_ptr + lanes[:, None] * K + outputs[None, :], p, mask=tile_mask)
    # 5. dW[:, tile] = Xᵀ (s·dZ), db[tile] = Σ_i dZ_i.
    dz_scaled = dz * x_scale
    if X_RESIDENT:
        feats = tl.arange(0, BLOCK_D)
        accumulate(grad_ptr + feats[:, None] * K + outputs[None, :],
                   tl.dot(tl.trans(x), dz_scaled, input_precision=INPUT_PRECISION),
                   (feats < D)[:, None] & output_mask[None, :], visit, DETERMINISTIC)
    else:
        for d0 in range(0, D, BLOCK_D):
            x_chunk = load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D)
            feats = d0 + tl.arange(0, BLOCK_D)
            accumulate(grad_ptr + feats[:, None] * K + outputs[None, :],
                       tl.dot(tl.trans(x_chunk), dz_scaled, input_precision=INPUT_PRECISION),
                       (feats < D)[:, None] & output_mask[None, :], visit, DETERMINISTIC)
    accumulate(grad_ptr + D * K + outputs, tl.sum(dz, axis=0), output_mask, visit, DETERMINISTIC)
    return tl.sum(tl.sum(loss, axis=1), axis=0)


@triton.jit
def sigmoid_sgd_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, theta_ptr, grad_ptr, loss_ptr, probs_ptr,
    B, D, K, x_scale, grad_scale, blocks_per_program,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, X_RESIDENT: tl.constexpr,
    COLUMNWISE: tl.constexpr, LOSS: tl.constexpr, DETERMINISTIC: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """Loss and gradient of ``K`` sigmoids over the minibatch ``rows[:B]``; buffers as in ``softmax_sgd_kernel``.

    ``y`` holds the (N, K) targets row-major (any dtype; (N,) when K = 1), ``theta`` / ``grad`` the flat
    ``[W (D, K) row-major, b (K,)]``, ``probs`` (B, K) σ(z) when not None.
    """
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    if DETERMINISTIC:
        grad_ptr += pid.to(tl.int64) * (D * K + K)  # this program's own partial slice
    loss_total = tl.zeros((), dtype=tl.float32)
    for visit in range(0, blocks_per_program):
        # 1. Gather the row block: indices and weights (masked lanes get weight 0).
        lanes = row_block_lanes(pid + visit * n_programs, BLOCK_B)
        row, row_mask, weight = load_rows(rows_ptr, sample_weight_ptr, lanes, B)
        if COLUMNWISE:
            if X_RESIDENT:
                # The only read of X[rows] in this kernel, kept in X's dtype: steps 2–5 of every output run over it.
                x = load_x_block(X_ptr, stride_xn, row, row_mask, 0, D, BLOCK_D)
            else:
                x = 0.0  # unused: the column helpers stream X in chunks
            loss_total += _columnwise_row_block(x, X_ptr, stride_xn, row, row_mask, weight, lanes, y_ptr, theta_ptr,
                                                grad_ptr, probs_ptr, D, K, x_scale, grad_scale, visit, BLOCK_B,
                                                BLOCK_D, BLOCK_K, X_RESIDENT, LOSS, DETERMINISTIC)
        else:
            if X_RESIDENT:
                # The only read of X[rows] in this kernel: both tl.dot products of every output tile use it.
                x = load_x_tile(X_ptr, stride_xn, row, row_mask, 0, D, BLOCK_D)
            else:
                x = 0.0  # unused: _output_tile streams X in chunks
            # Steps 2–5 per output tile: each is complete by itself (independent sigmoids), one sweep.
            for k0 in range(0, K, BLOCK_K):
                loss_total += _output_tile(x, X_ptr, stride_xn, row, row_mask, weight, lanes, y_ptr, theta_ptr,
                                           grad_ptr, probs_ptr, k0, D, K, x_scale, grad_scale, visit, BLOCK_B,
                                           BLOCK_D, BLOCK_K, X_RESIDENT, LOSS, DETERMINISTIC, INPUT_PRECISION)
    # 6. This program's summed loss: one atomic (fast) or its own slot (deterministic).
    add_loss(loss_ptr, pid, loss_total, DETERMINISTIC)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher: check, allocate nothing per step (buffers belong to the caller), launch
# ---------------------------------------------------------------------------------------------------------------------


def sigmoid_sgd_arguments(X, rows, y, theta, grad, loss, *, x_scale, grad_scale, config, n_outputs=1,
                          loss_kind="bce", max_programs=None, deterministic=False, input_precision="ieee",
                          sample_weight=None, probs=None):
    """The grid and keyword arguments of :func:`sigmoid_sgd_kernel` on the minibatch ``rows``, checked, not launched.

    ``y`` is the contiguous (N, K) targets ((N,) when K = 1) in any dtype; ``loss_kind`` ``"bce"`` or ``"mse"``; the
    other buffers as in ``softmax_sgd_arguments`` with C = K. No device value is read: nothing synchronises.
    Returns ``((P,), arguments)``.
    """
    n_rows, n_features = X.shape
    if loss_kind not in MODEL_LOSSES.values():
        raise ValueError(f"loss_kind must be one of {tuple(MODEL_LOSSES.values())}, got {loss_kind!r}")
    target_shapes = [(n_rows, n_outputs)] + ([(n_rows,)] if n_outputs == 1 else [])
    if tuple(y.shape) not in target_shapes or not y.is_contiguous():
        raise ValueError(f"targets must be a contiguous ({n_rows}, {n_outputs}) array, got shape {tuple(y.shape)}")
    # A config made for another shape would silently drop features past a resident tile or outputs past db's vector.
    if config.x_resident and config.block_d < n_features:
        raise ValueError(f"config holds {config.block_d} features of X resident, X has {n_features}")
    if config.columnwise and config.block_k < n_outputs:
        raise ValueError(f"config's column path holds {config.block_k} outputs, the model has {n_outputs}")
    return step_arguments(X, rows, y, theta, grad, loss, n_outputs=n_outputs, outputs_name="K", config=config,
                          x_scale=x_scale, grad_scale=grad_scale, max_programs=max_programs,
                          deterministic=deterministic, input_precision=input_precision, sample_weight=sample_weight,
                          probs=probs, maxnreg=config.max_registers, LOSS=loss_kind)


def launch_sigmoid_sgd(*args, **kwargs) -> int:
    """Launch :func:`sigmoid_sgd_kernel` with :func:`sigmoid_sgd_arguments` (same parameters); return ``P``."""
    grid, arguments = sigmoid_sgd_arguments(*args, **kwargs)
    sigmoid_sgd_kernel[grid](**arguments)
    return grid[0]


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: the checkable core (no update), same kernel over all N rows
# ---------------------------------------------------------------------------------------------------------------------


def sigmoid_loss_grad(X, y, theta, *, n_outputs=1, loss_kind="bce", x_scale=1.0, deterministic=False,
                      input_precision="ieee", sample_weight=None, return_probs=False):
    """Mean loss (``"bce"`` or ``"mse"``) over all rows of ``X`` and its gradient, through :func:`sigmoid_sgd_kernel`.

    Returns ``(loss_sum, grad, probs)``: the fp64 (1,) summed loss, the flat (D·K + K,) mean gradient
    ``[dW row-major, db]`` and σ(z) in the shape of ``y`` (``None`` unless ``return_probs``).
    """
    n_rows, n_features = X.shape
    config = sigmoid_config(n_features, n_outputs, deterministic)
    probs = torch.empty(y.shape, dtype=torch.float32, device=X.device) if return_probs else None

    def launch_step(rows, grad, loss, **mode):
        return launch_sigmoid_sgd(X, rows, y, theta, grad, loss, x_scale=x_scale, grad_scale=1.0 / n_rows,
                                  config=config, n_outputs=n_outputs, loss_kind=loss_kind,
                                  input_precision=input_precision, sample_weight=sample_weight, probs=probs, **mode)

    loss_sum, grad = loss_grad_over_rows(launch_step, X, theta, n_outputs=n_outputs, block_b=config.block_b,
                                         deterministic=deterministic)
    return loss_sum, grad, probs
