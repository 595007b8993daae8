"""One fused kernel for the loss and gradient of softmax regression on a minibatch given as row indices.

For the minibatch rows ``r`` (indices into the device-resident ``X``; shuffling never copies ``X``)::

    Z  = s·X[r] W + b                       (B, C), fp32 accumulation whatever X's dtype
    P  = softmax(Z),  CE_i = lse(Z_i) − Z_{i,y_i}
    dZ = w_i (P − onehot(y)) / B            w_i = sample weight (1 without)
    dW += s·X[r]ᵀ dZ,   db += Σ_i dZ_i,   loss += Σ_i w_i CE_i

Nothing of size B·C is written: the logits live in registers, one (BLOCK_B, BLOCK_C) tile at a time, in two sweeps
over the classes (an online log-sum-exp, then the gradient, recomputing each logits tile). The grid is over row blocks
only: spreading the classes over programs would need a cross-program log-sum-exp, i.e. a third launch.

:func:`softmax_config` picks one of three ways to read ``X[r]``:

- C ≤ 64 and D ≤ 1024 (MNIST): one (16, D_pad) tile in X's own dtype, loaded once per row block; both sweeps run
  over it one class column at a time with fp32 FMAs and sums (no tl.dot, so ``INPUT_PRECISION`` has no effect).
- C > 64 and D ≤ 1024: cdiv(D, 32) (16, 32) chunks loaded once per row block, kept in shared memory by the compiler,
  and (16, 16) class tiles by tl.dot from there, forward and backward.
- D > 1024: ``X[r]`` streamed in ``BLOCK_D`` chunks by each sweep, per class tile (re-read from L2).

``linclass-gpu kernels report`` counts per build the loads of X inside a class or feature loop (none when resident),
registers and spills. ``sgd_update.py`` applies the update in a second launch that also resets the gradient buffer: a
step is 2 launches and 0 host synchronisations. Bytes moved per step at MNIST shapes (B=128, D=784, C=10), by
``linclass_gpu.kernel_report.bytes_moved`` (compulsory global traffic)::

                           fused (2 launches)   unfused (gather, [widen], matmul, softmax, loss, dZ, matmul, Σ, update)
    X float32                    591,864 B        1,802,060 B   (3.0x)
    X uint8 (s = 1/255)          290,808 B        1,701,708 B   (5.9x: unfused must widen X[r] to float32 first)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._launch import loss_grad_over_rows, step_arguments
from ._tiles import (
    NARROW_BLOCK_N,
    WIDE_BLOCK_N,
    accumulate,
    add_loss,
    dot_tile_shape,
    load_row_block,
    load_x_block,
    load_x_tile,
    online_logsumexp,
    param_tile,
    row_block_lanes,
    softmax_dz,
)

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Minibatch rows per program: tl.dot's minimum M (forward) and K (backward).
BLOCK_B = 16
NUM_WARPS = 8
# ptxas register cap (.maxnreg). Left to itself ptxas caps registers for occupancy and spills; at B = 128 only 8
# programs run per step, so occupancy is not what limits.
MAX_REGISTERS = 255
# X resident, one class column at a time, up to D_pad = 1024 features; no feature loop to pipeline.
RESIDENT_D_MAX = 1024
RESIDENT_NUM_STAGES = 1
# X resident in (16, 32) chunks (800 features held at D = 784, not 1024), (16, 16) class tiles. A tighter cap leaves
# ptxas no room to over-schedule the 25 unrolled chunk GEMMs and spill their loop-invariant scalars, and lets two
# programs share an SM (2 · 256 · 112 < 65,536). TF32's mma fragments need more: TF32 launches keep MAX_REGISTERS.
CHUNK_BLOCK_D, CHUNK_BLOCK_C = 32, 16
CHUNK_MAX_REGISTERS = 112
# Runtime arguments that are not int32 or fp32 buffers, typed for the compile report (which sets X's and loss's).
ARG_TYPES = {"rows_ptr": "*i64", "y_ptr": "*i64", "x_scale": "fp32", "grad_scale": "fp32"}


@dataclass(frozen=True)
class SoftmaxConfig:
    """Compile-time tile shape of :func:`softmax_sgd_kernel` for one (D, C).

    ``x_chunks`` is the number of (BLOCK_B, BLOCK_D) tiles of ``X[rows]`` loaded once per row block and kept for both
    products (0: X is streamed in BLOCK_D chunks by each product instead); ``max_registers`` is the ptxas cap for
    ``input_precision="ieee"`` (see :meth:`register_cap`).
    """

    block_b: int
    block_d: int
    block_c: int
    x_chunks: int
    one_class_tile: bool
    num_warps: int
    num_stages: int
    max_registers: int = MAX_REGISTERS

    @property
    def x_resident(self) -> bool:
        return self.x_chunks > 0

    @property
    def constexprs(self) -> dict:
        """The kernel's tile-shape constexprs, as the launcher and the compile report pass them."""
        return {"BLOCK_B": self.block_b, "BLOCK_D": self.block_d, "BLOCK_C": self.block_c, "X_CHUNKS": self.x_chunks,
                "ONE_CLASS_TILE": self.one_class_tile}

    def register_cap(self, input_precision: str) -> int:
        """The ``maxnreg`` of a launch: TF32's mma fragments need more than the FMA products' cap."""
        return self.max_registers if input_precision == "ieee" else MAX_REGISTERS

    @property
    def label(self) -> str:
        mode = ("streamed" if not self.x_chunks else "resident" if self.x_chunks == 1
                else f"resident ({self.x_chunks} chunks)")
        tiles = "1 class tile" if self.one_class_tile else "class-tile loop"
        return (f"B{self.block_b} D{self.block_d} C{self.block_c} X {mode}, {tiles}, {self.num_warps} warps, "
                f"{self.num_stages} stages")


def softmax_config(n_features: int, n_classes: int, deterministic: bool = False) -> SoftmaxConfig:
    """The tile shape shipped for ``D = n_features``, ``C = n_classes`` and the reduction mode."""
    d_pad = max(16, triton.next_power_of_2(n_features))
    if d_pad <= RESIDENT_D_MAX and n_classes <= WIDE_BLOCK_N:
        # X[rows] resident, one class column at a time (_resident_row_block); BLOCK_C only sizes the db vector.
        return SoftmaxConfig(
            block_b=BLOCK_B, block_d=d_pad, block_c=NARROW_BLOCK_N if n_classes <= NARROW_BLOCK_N else WIDE_BLOCK_N,
            x_chunks=1, one_class_tile=True, num_warps=NUM_WARPS, num_stages=RESIDENT_NUM_STAGES,
        )
    if d_pad <= RESIDENT_D_MAX:
        # X[rows] resident as (16, 32) chunks, (16, 16) class tiles by tl.dot (the same in both reduction modes).
        return SoftmaxConfig(
            block_b=BLOCK_B, block_d=CHUNK_BLOCK_D, block_c=CHUNK_BLOCK_C, x_chunks=triton.cdiv(n_features,
            CHUNK_BLOCK_D), one_class_tile=False, num_warps=NUM_WARPS, num_stages=RESIDENT_NUM_STAGES,
            max_registers=CHUNK_MAX_REGISTERS,
        )
    block_d, block_c, num_stages = dot_tile_shape(n_classes, deterministic)
    return SoftmaxConfig(block_b=BLOCK_B, block_d=block_d, block_c=block_c, x_chunks=0,
                         one_class_tile=n_classes <= block_c, num_warps=NUM_WARPS, num_stages=num_stages)


# ---------------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _load_x_chunks(X_ptr, stride_xn, row, row_mask, D, BLOCK_D: tl.constexpr, X_CHUNKS: tl.constexpr):
    """``X[row]`` as a tuple of ``X_CHUNKS`` (BLOCK_B, BLOCK_D) tiles in X's own dtype, chunk k = features k·BLOCK_D…

    Separate tensors, not one wide tile, so each chunk feeds its own tl.dot (indexed by a static loop's k).
    """
    chunks = ()
    for k in tl.static_range(X_CHUNKS):
        chunks = chunks + (load_x_block(X_ptr, stride_xn, row, row_mask, k * BLOCK_D, D, BLOCK_D),)
    return chunks


@triton.jit
def _logits_tile(x, X_ptr, stride_xn, row, row_mask, theta_ptr, c0, D, C, x_scale,
                 BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
                 X_CHUNKS: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Logits of class tile ``c0 : c0 + BLOCK_C``, padded classes −inf; ``x`` is the tuple of resident chunks
    (only the last may pass D) or unused (X streamed)."""
    cols = c0 + tl.arange(0, BLOCK_C)
    col_mask = cols < C
    xw = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
    if X_CHUNKS > 0:
        for k in tl.static_range(X_CHUNKS):
            w_ptrs, w_mask = param_tile(theta_ptr, k * BLOCK_D, c0, D, C, BLOCK_D, BLOCK_C, k == X_CHUNKS - 1)
            xw = tl.dot(x[k].to(tl.float32), tl.load(w_ptrs, mask=w_mask, other=0.0), xw,
                        input_precision=INPUT_PRECISION)
    else:
        for d0 in range(0, D, BLOCK_D):
            w_ptrs, w_mask = param_tile(theta_ptr, d0, c0, D, C, BLOCK_D, BLOCK_C, True)
            xw = tl.dot(load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D),
                        tl.load(w_ptrs, mask=w_mask, other=0.0), xw, input_precision=INPUT_PRECISION)
    bias = tl.load(theta_ptr + D * C + cols, mask=col_mask, other=0.0)
    # (s·X) W = s·(X W): the scale multiplies the (B, C) tile, not the (B, D) one.
    z = xw * x_scale + bias[None, :]
    return tl.where(col_mask[None, :], z, float("-inf"))


@triton.jit
def _backward_tile(x, X_ptr, stride_xn, row, row_mask, y, weight, m, inv_s, z, lanes, grad_ptr, probs_ptr,
                   c0, B, D, C, x_scale, grad_scale, visit,
                   BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, X_CHUNKS: tl.constexpr,
                   DETERMINISTIC: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """dZ of one class tile and its contribution to dW[:, tile] and db[tile]; P stored when ``probs_ptr`` is given."""
    cols = c0 + tl.arange(0, BLOCK_C)
    col_mask = cols < C
    p, dz = softmax_dz(z, y, m, inv_s, weight * grad_scale, c0, BLOCK_C)
    if probs_ptr is not None:
        tl.store(probs_ptr + lanes[:, None] * C + cols[None, :], p, mask=row_mask[:, None] & col_mask[None, :])
    # dW = (s·X)ᵀ dZ = Xᵀ (s·dZ): again scale the small tile.
    dz_scaled = dz * x_scale
    if X_CHUNKS > 0:
        for k in tl.static_range(X_CHUNKS):
            dw = tl.dot(tl.trans(x[k].to(tl.float32)), dz_scaled, input_precision=INPUT_PRECISION)
            g_ptrs, g_mask = param_tile(grad_ptr, k * BLOCK_D, c0, D, C, BLOCK_D, BLOCK_C, k == X_CHUNKS - 1)
            accumulate(g_ptrs, dw, g_mask, visit, DETERMINISTIC)
    else:
        for d0 in range(0, D, BLOCK_D):
            dw = tl.dot(tl.trans(load_x_tile(X_ptr, stride_xn, row, row_mask, d0, D, BLOCK_D)), dz_scaled,
                        input_precision=INPUT_PRECISION)
            g_ptrs, g_mask = param_tile(grad_ptr, d0, c0, D, C, BLOCK_D, BLOCK_C, True)
            accumulate(g_ptrs, dw, g_mask, visit, DETERMINISTIC)
    # db = Σ_i dZ_i
    accumulate(grad_ptr + D * C + cols, tl.sum(dz, axis=0), col_mask, visit, DETERMINISTIC)


@triton.jit
def _class_logits(x, theta_ptr, feats, c, D, C, x_scale):
    """Logits column ``c`` over the resident tile: ``z_c = s·X[rows] W[:, c] + b_c``, a (BLOCK_B,) vector in fp32."""
    w_c = tl.load(theta_ptr + feats * C + c, mask=feats < D, other=0.0)
    return tl.sum(x.to(tl.float32) * w_c[None, :], axis=1) * x_scale + tl.load(theta_ptr + D * C + c)


@triton.jit
def _resident_row_block(x, y, weight, lanes, row_mask, theta_ptr, grad_ptr, probs_ptr, D, C, x_scale, grad_scale,
                        visit, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, DETERMINISTIC: tl.constexpr):
    """Steps 2–4 of :func:`softmax_sgd_kernel` on the resident tile ``x = X[rows]``, class tiles one class wide (each
    logits column computed again in the second sweep); returns the row block's weighted loss."""
    feats = tl.arange(0, BLOCK_D)
    # 2. Online log-sum-exp over the classes: m_i = max_c z_ic, s_i = Σ_c exp(z_ic − m_i), and the target logit.
    m = tl.full(y.shape, float("-inf"), dtype=tl.float32)
    s = tl.zeros(y.shape, dtype=tl.float32)
    z_target = tl.zeros(y.shape, dtype=tl.float32)
    for c in range(0, C):
        z_c = _class_logits(x, theta_ptr, feats, c, D, C, x_scale)
        m_new = tl.maximum(m, z_c)
        # As in online_logsumexp: every exponent ≤ 0; exp(−inf − m_new) = 0 clears the empty start.
        s = s * tl.exp(m - m_new) + tl.exp(z_c - m_new)
        z_target += tl.where(y == c, z_c, 0.0)
        m = m_new
    inv_s = 1.0 / s
    # 3. CE_i = (m_i − z_{i,y_i}) + log s_i, weighted (see the kernel).
    loss = tl.sum(((m - z_target) + tl.log(s)) * weight, axis=0)
    # 4. Per class: p_c = exp(z_c − m)/s, dz_c = w_i (p_c − [y_i = c]) / B, dW[:, c] = (s·X)ᵀ dz_c, db_c = Σ_i dz_ic.
    cols = tl.arange(0, BLOCK_C)
    db = tl.zeros((BLOCK_C,), dtype=tl.float32)
    row_scale = weight * grad_scale
    for c in range(0, C):
        z_c = _class_logits(x, theta_ptr, feats, c, D, C, x_scale)
        p_c = tl.exp(z_c - m) * inv_s
        if probs_ptr is not None:
            tl.store(probs_ptr + lanes * C + c, p_c, mask=row_mask)
        dz_c = (p_c - tl.where(y == c, 1.0, 0.0)) * row_scale
        dw_c = tl.sum(x.to(tl.float32) * (dz_c * x_scale)[:, None], axis=0)
        accumulate(grad_ptr + feats * C + c, dw_c, feats < D, visit, DETERMINISTIC)
        db = tl.where(cols == c, tl.sum(dz_c, axis=0), db)
    accumulate(grad_ptr + D * C + cols, db, cols < C, visit, DETERMINISTIC)
    return loss


@triton.jit
def softmax_sgd_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, theta_ptr, grad_ptr, loss_ptr, probs_ptr,
    B, D, C, x_scale, grad_scale, blocks_per_program,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    X_CHUNKS: tl.constexpr, ONE_CLASS_TILE: tl.constexpr, DETERMINISTIC: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """Loss and gradient of softmax regression over the minibatch ``rows[:B]``.

    Program ``pid`` takes row blocks ``pid, pid + P, …`` (``blocks_per_program`` of them; 1 in fast mode). ``theta``
    is the flat fp32 parameter vector ``[W (D, C) row-major, b (C,)]`` and ``grad`` has the same layout: the shared
    atomic accumulator (fast) or ``P`` partial slices of it (deterministic). ``loss`` is the fp64 running loss (fast)
    or ``P`` fp32 partial sums (deterministic).
    """
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    if DETERMINISTIC:
        grad_ptr += pid.to(tl.int64) * (D * C + C)  # this program's own partial slice
    loss_total = tl.zeros((), dtype=tl.float32)
    for visit in range(0, blocks_per_program):
        # 1. Gather the row block: indices, labels, weights (masked lanes get weight 0).
        lanes = row_block_lanes(pid + visit * n_programs, BLOCK_B)
        row, row_mask, y, weight = load_row_block(rows_ptr, y_ptr, sample_weight_ptr, lanes, B)
        y = y.to(tl.int32)
        if X_CHUNKS > 0 and ONE_CLASS_TILE:
            # The only read of X[rows] in this kernel, kept in X's dtype: steps 2–4 run over it a class at a time.
            x = load_x_block(X_ptr, stride_xn, row, row_mask, 0, D, BLOCK_D)
            loss_total += _resident_row_block(x, y, weight, lanes, row_mask, theta_ptr, grad_ptr, probs_ptr, D, C,
                                              x_scale, grad_scale, visit, BLOCK_D, BLOCK_C, DETERMINISTIC)
        else:
            if X_CHUNKS > 0:
                # The only read of X[rows] in this kernel: its chunks serve both GEMMs of every class tile.
                x = _load_x_chunks(X_ptr, stride_xn, row, row_mask, D, BLOCK_D, X_CHUNKS)
            else:
                x = 0.0  # unused: _logits_tile / _backward_tile stream X in chunks

            # 2. Logits, row max m_i and s_i = Σ_c exp(z_ic − m_i) (lse_i = m_i + log s_i), online over class tiles.
            m = tl.full((BLOCK_B,), float("-inf"), dtype=tl.float32)
            s = tl.zeros((BLOCK_B,), dtype=tl.float32)
            z_target = tl.zeros((BLOCK_B,), dtype=tl.float32)
            if ONE_CLASS_TILE:
                z = _logits_tile(x, X_ptr, stride_xn, row, row_mask, theta_ptr, 0, D, C, x_scale,
                                 BLOCK_B, BLOCK_D, BLOCK_C, X_CHUNKS, INPUT_PRECISION)
                m, s, z_target = online_logsumexp(m, s, z_target, z, y, 0, BLOCK_C)
            else:
                for c0 in range(0, C, BLOCK_C):
                    z = _logits_tile(x, X_ptr, stride_xn, row, row_mask, theta_ptr, c0, D, C, x_scale,
                                     BLOCK_B, BLOCK_D, BLOCK_C, X_CHUNKS, INPUT_PRECISION)
                    m, s, z_target = online_logsumexp(m, s, z_target, z, y, c0, BLOCK_C)
            inv_s = 1.0 / s

            # 3. Cross-entropy CE_i = −log p_{i,y_i} = lse_i − z_{i,y_i} = (m_i − z_{i,y_i}) + log s_i, weighted;
            #    summed on the device. The difference is taken first: m and z_y may be 1e4 while CE is small.
            loss_total += tl.sum(((m - z_target) + tl.log(s)) * weight, axis=0)

            # 4. dZ, dW, db per class tile; beyond one tile the logits are recomputed (O(B) memory, not O(B·C)).
            if ONE_CLASS_TILE:
                _backward_tile(x, X_ptr, stride_xn, row, row_mask, y, weight, m, inv_s, z, lanes, grad_ptr,
                               probs_ptr, 0, B, D, C, x_scale, grad_scale, visit, BLOCK_B, BLOCK_D, BLOCK_C,
                               X_CHUNKS, DETERMINISTIC, INPUT_PRECISION)
            else:
                for c0 in range(0, C, BLOCK_C):
                    z = _logits_tile(x, X_ptr, stride_xn, row, row_mask, theta_ptr, c0, D, C, x_scale,
                                     BLOCK_B, BLOCK_D, BLOCK_C, X_CHUNKS, INPUT_PRECISION)
                    _backward_tile(x, X_ptr, stride_xn, row, row_mask, y, weight, m, inv_s, z, lanes, grad_ptr,
                                   probs_ptr, c0, B, D, C, x_scale, grad_scale, visit, BLOCK_B, BLOCK_D, BLOCK_C,
                                   X_CHUNKS, DETERMINISTIC, INPUT_PRECISION)
    # 5. This program's summed loss: one atomic (fast) or its own slot (deterministic).
    add_loss(loss_ptr, pid, loss_total, DETERMINISTIC)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher: check, allocate nothing per step (buffers belong to the caller), launch
# ---------------------------------------------------------------------------------------------------------------------


def softmax_sgd_arguments(X, rows, y, theta, grad, loss, *, n_classes, x_scale, grad_scale, config,
                          max_programs=None, deterministic=False, input_precision="ieee", sample_weight=None,
                          probs=None):
    """The grid and keyword arguments of :func:`softmax_sgd_kernel` on the minibatch ``rows``, checked, not launched.

    ``grad`` is the (D·C + C,) atomic accumulator, or in deterministic mode (P_max ≥ P, D·C + C) partials; ``loss``
    a (1,) float64 accumulator, or (P_max,) float32 partials. No device value is read: nothing synchronises.
    Returns ``((P,), arguments)``; the backend binds them once per batch size and replays the launch
    (``linclass_gpu.backends.triton_launch``).
    """
    n_features = X.shape[1]
    if config.x_chunks and not (config.x_chunks - 1) * config.block_d < n_features <= config.x_chunks * config.block_d:
        raise ValueError(f"config holds X in {config.x_chunks} chunks of {config.block_d} features, X has {n_features}")
    return step_arguments(X, rows, y, theta, grad, loss, n_outputs=n_classes, outputs_name="C", config=config,
                          x_scale=x_scale, grad_scale=grad_scale, max_programs=max_programs,
                          deterministic=deterministic, input_precision=input_precision, sample_weight=sample_weight,
                          probs=probs, maxnreg=config.register_cap(input_precision))


def launch_softmax_sgd(*args, **kwargs) -> int:
    """Launch :func:`softmax_sgd_kernel` with :func:`softmax_sgd_arguments` (same parameters); return ``P``."""
    grid, arguments = softmax_sgd_arguments(*args, **kwargs)
    softmax_sgd_kernel[grid](**arguments)
    return grid[0]


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: the checkable core (no update), same kernel over all N rows
# ---------------------------------------------------------------------------------------------------------------------


def softmax_loss_grad(X, y, theta, n_classes, *, x_scale=1.0, deterministic=False, input_precision="ieee",
                      sample_weight=None, return_probs=False):
    """Mean cross-entropy over all rows of ``X`` and its gradient, through :func:`softmax_sgd_kernel`.

    Returns ``(loss_sum, grad, probs)``: the fp64 (1,) summed loss, the flat (D·C + C,) mean gradient
    ``[dW row-major, db]`` and the (N, C) probabilities (``None`` unless ``return_probs``).
    """
    n_rows, n_features = X.shape
    config = softmax_config(n_features, n_classes, deterministic)
    probs = torch.empty((n_rows, n_classes), dtype=torch.float32, device=X.device) if return_probs else None

    def launch_step(rows, grad, loss, **mode):
        return launch_softmax_sgd(X, rows, y, theta, grad, loss, n_classes=n_classes, x_scale=x_scale,
                                  grad_scale=1.0 / n_rows, config=config, input_precision=input_precision,
                                  sample_weight=sample_weight, probs=probs, **mode)

    loss_sum, grad = loss_grad_over_rows(launch_step, X, theta, n_outputs=n_classes, block_b=config.block_b,
                                         deterministic=deterministic)
    return loss_sum, grad, probs
