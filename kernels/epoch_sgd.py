"""A whole epoch of minibatch SGD in one launch: one program, the parameters held on chip from first step to last.

The per-step path makes 2 launches per step; at MNIST shapes a step is ~4 MFLOP, so an epoch is bounded by launch
latency. Here a single program runs every step of the epoch::

    for t in 0 … n_steps − 1:                      rows r = order[t·B : min((t+1)·B, N)],  B_t = |r|
        Z  = s·X[r] W + b                          (B_t, K), fp32 accumulation whatever X's dtype
        softmax:  CE_i = lse(Z_i) − Z_{i,y_i},  dZ = w_i (softmax(Z) − onehot(y)) / B_t
        sigmoid:  ℓ_ik = BCE or squared error of σ(Z_ik),  dZ = w_i ∂ℓ/∂Z / B_t
        g_W = s·X[r]ᵀ dZ + l2·W,   g_b = Σ_i dZ_i
        v ← μ v + g;   step = g + μ v (Nesterov) or v (or g without momentum);   θ ← θ − lr_t·step
    loss += Σ_t Σ_i w_i ℓ_i                        written to the device once, at the end

with the step kernels' formulas (``_tiles.online_logsumexp`` / ``softmax_dz`` / ``sigmoid_loss_and_dz``) and
``sgd_update.py``'s rule (L2 on W only, then momentum, then the step); the step's gradient is summed in another
order, so the two paths agree to fp32 rounding, not bitwise. ``order`` (the epoch's shuffled rows) and ``lr`` (the
schedule's per-step rates) are device arrays: the host computes nothing per step and reads the loss once per epoch.

- **State on chip.** W is ``X_CHUNKS`` (CHUNK_D, BLOCK_K) tiles (a tuple indexed by a static loop) and b a
  (BLOCK_K,) vector, loop-carried through the step loop with the momentum state: read from θ once, written once.
  The step's gradient accumulates in registers in the same tiling from the terms known before the step (l2·W, and
  μ·v for heavy-ball momentum, so the sum is the new v itself). Nothing reaches global memory between steps, so no
  thread reads another's global write and no barrier beyond Triton's own is needed.
- **Products.** Per 16-row block, ``Z = Σ_k tl.dot(X[r, chunk k], W_k)`` and ``G_k += tl.dot(X[r, chunk k]ᵀ, s·dZ)``;
  X is read once per row block in its own dtype and widened to fp32 where used. FMA (``"ieee"``) is the default:
  at M = 16 on one SM, tf32x3's three mma passes are estimated no faster.
- **Prefetch.** The next row block's indices, labels, weights and first ``X_PREFETCH`` chunks are loaded before
  this block's products; its other chunks load behind the prefetched ones' forward products.
- **Scope.** One program, one SM, sm_90 and later (:data:`MIN_CAPABILITY`), K ≤ :data:`MAX_OUTPUTS`,
  D ≤ :data:`MAX_FEATURES`; plain or (Nesterov) momentum SGD, L2, sample weights, any intercept and input dtype;
  deterministic by construction. Other optimizers, L1, a data-parallel reducer and larger shapes keep the per-step
  path (``TritonFusedSGD.run_epoch`` decides).

At MNIST shapes a step is 3.3 M MACs, ≈ 15 µs of FMA on one SM, plus the dot-operand layout conversions (CTA
barriers: the report's BAR count): an estimated ≈ 20 µs per step, ≈ 10 ms per epoch. The 1 ms goal needs the
features split over a cluster of SMs; this kernel is the interpreter-tested single-program reference for that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._tiles import (
    LAUNCH_OPTIONS,
    gradient_start,
    load_rows,
    load_targets,
    load_x_block,
    param_tile,
    row_block_loss_dz,
    sgd_rule,
)

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Rows per block: tl.dot's minimum M (forward) and K (backward). A step of B rows is cdiv(B, 16) blocks in sequence.
BLOCK_B = 16
# Features per tile of W, v, G and X: 800 padded features at D = 784, not 1024.
CHUNK_D = 32
# Outputs: one tile of 16 (tl.dot's minimum N) holds MNIST's 10 classes; two or three D_pad · 16 fp32 tile sets are
# what one SM's registers hold next to the X blocks in flight.
BLOCK_K = 16
MAX_OUTPUTS = BLOCK_K
MAX_FEATURES = 1024
NUM_WARPS = 8
# Feature chunks of the next row block read ahead into registers: fewer beside Nesterov's third tile set or weights.
PREFETCH_CHUNKS = 8
PREFETCH_CHUNKS_NARROW = 4
# No loop for the software pipeliner to stage: the prefetch of the next row block is written out in the kernel.
NUM_STAGES = 1
# Compute capability the kernel is launched on: sm_90's register file holds W and the accumulator; ptxas's sm_80
# build spills them, so A100-class devices keep the per-step path.
MIN_CAPABILITY = (9, 0)
# The losses of each model (linclass_gpu.backends.base.MODELS), as the kernel's LOSS constexpr.
MODEL_LOSSES = {"softmax": "softmax", "sigmoid": "bce", "sigmoid_mse": "mse"}
# Runtime arguments that are not int32 or fp32 buffers, typed for the compile report (which sets X's and y's).
ARG_TYPES = {"rows_ptr": "*i64", "loss_ptr": "*fp64", "x_scale": "fp32", "l2": "fp32", "momentum": "fp32"}


@dataclass(frozen=True)
class EpochConfig:
    """Compile-time shape of :func:`epoch_sgd_kernel` for one (D, K)."""

    x_chunks: int
    x_prefetch: int
    block_b: int = BLOCK_B
    chunk_d: int = CHUNK_D
    block_k: int = BLOCK_K
    num_warps: int = NUM_WARPS
    num_stages: int = NUM_STAGES

    @property
    def constexprs(self) -> dict:
        """The kernel's tile-shape constexprs, as the launcher and the compile report pass them."""
        return {"BLOCK_B": self.block_b, "CHUNK_D": self.chunk_d, "X_CHUNKS": self.x_chunks,
                "X_PREFETCH": self.x_prefetch, "BLOCK_K": self.block_k}

    @property
    def label(self) -> str:
        return (f"1 program, B{self.block_b} {self.x_chunks} x (D{self.chunk_d} K{self.block_k}) tiles on chip, "
                f"{self.x_prefetch} chunks prefetched, {self.num_warps} warps")


def epoch_config(n_features: int, n_outputs: int, nesterov: bool = False,
                 sample_weight: bool = False) -> EpochConfig | None:
    """The epoch kernel's shape for D, K, the momentum rule and row weights, or None where it does not apply."""
    if not (1 <= n_outputs <= MAX_OUTPUTS and 1 <= n_features <= MAX_FEATURES):
        return None
    x_chunks = triton.cdiv(n_features, CHUNK_D)
    return EpochConfig(x_chunks=x_chunks,
                       x_prefetch=min(x_chunks, PREFETCH_CHUNKS_NARROW if nesterov or sample_weight
                                      else PREFETCH_CHUNKS))


# ---------------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _load_x_chunks(X_ptr, stride_xn, row, row_mask, D, CHUNK_D: tl.constexpr, FIRST: tl.constexpr,
                   LAST: tl.constexpr):
    """Chunks ``FIRST … LAST − 1`` of ``X[row]``: a tuple of (BLOCK_B, CHUNK_D) tiles in X's own dtype."""
    x = ()
    for k in tl.static_range(FIRST, LAST):
        x = x + (load_x_block(X_ptr, stride_xn, row, row_mask, k * CHUNK_D, D, CHUNK_D),)
    return x


@triton.jit
def _load_row_block(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, start, end, D, K,
                    BLOCK_B: tl.constexpr, CHUNK_D: tl.constexpr, X_PREFETCH: tl.constexpr, BLOCK_K: tl.constexpr,
                    LOSS: tl.constexpr):
    """What is read ahead for the row block at positions ``start …`` of the epoch order (those ≥ ``end`` masked):
    ``(row, row_mask, weight, y, x_head)``, y the (BLOCK_B,) class ids (softmax) or (BLOCK_B, BLOCK_K) fp32 targets,
    x_head the first ``X_PREFETCH`` feature chunks."""
    lanes = start + tl.arange(0, BLOCK_B)
    row, row_mask, weight = load_rows(rows_ptr, sample_weight_ptr, lanes, end)
    y = load_targets(y_ptr, row, row_mask, K, BLOCK_K, LOSS)
    return row, row_mask, weight, y, _load_x_chunks(X_ptr, stride_xn, row, row_mask, D, CHUNK_D, 0, X_PREFETCH)


@triton.jit
def epoch_sgd_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, learning_rates_ptr, theta_ptr, velocity_ptr, loss_ptr,
    N, D, K, batch_size, n_steps, x_scale, l2, momentum,
    BLOCK_B: tl.constexpr, CHUNK_D: tl.constexpr, X_CHUNKS: tl.constexpr, X_PREFETCH: tl.constexpr,
    BLOCK_K: tl.constexpr, LOSS: tl.constexpr,
    MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, FIT_INTERCEPT: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """``n_steps`` SGD steps over the epoch order ``rows[:N]`` in batches of ``batch_size`` (the last takes the rest).

    ``theta`` (fp32 ``[W (D, K) row-major, b (K,)]``) and ``velocity`` are updated in place; the epoch's summed
    weighted loss is added to the fp64 ``loss``. One program: launch on a grid of (1,).
    """
    outputs = tl.arange(0, BLOCK_K)
    output_mask = outputs < K
    # 0. θ and v onto the chip, once; padded features and outputs are 0 and stay 0 (0 gradient, l2·0 = 0).
    w = ()
    v = ()
    for k in tl.static_range(X_CHUNKS):
        ptrs, mask = param_tile(theta_ptr, k * CHUNK_D, 0, D, K, CHUNK_D, BLOCK_K, k == X_CHUNKS - 1)
        w = w + (tl.load(ptrs, mask=mask, other=0.0),)
        if MOMENTUM:
            v = v + (tl.load(param_tile(velocity_ptr, k * CHUNK_D, 0, D, K, CHUNK_D, BLOCK_K, k == X_CHUNKS - 1)[0],
                             mask=mask, other=0.0),)
        else:
            v = v + (tl.zeros((CHUNK_D, BLOCK_K), dtype=tl.float32),)
    bias = tl.load(theta_ptr + D * K + outputs, mask=output_mask, other=0.0)
    if MOMENTUM:
        v_bias = tl.load(velocity_ptr + D * K + outputs, mask=output_mask, other=0.0)
    else:
        v_bias = tl.zeros((BLOCK_K,), dtype=tl.float32)
    loss_total = tl.zeros((), dtype=tl.float64)
    blocks_per_step = tl.cdiv(batch_size, BLOCK_B)
    # The first row block; every later one is prefetched by the block before it.
    row, row_mask, weight, y, x_head = _load_row_block(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, 0,
                                                       tl.minimum(batch_size, N), D, K, BLOCK_B, CHUNK_D, X_PREFETCH,
                                                       BLOCK_K, LOSS)
    for t in range(0, n_steps):
        step_start = t * batch_size
        step_end = tl.minimum(step_start + batch_size, N)
        # The mean over this step's rows (the last step may hold fewer than batch_size).
        grad_scale = 1.0 / (step_end - step_start).to(tl.float32)
        # g starts at l2·W, plus μ·v for heavy-ball momentum so that it sums to the new v (Nesterov needs g alone).
        g = ()
        for k in tl.static_range(X_CHUNKS):
            g = g + (gradient_start(w[k], v[k], l2, momentum, MOMENTUM, NESTEROV),)
        g_bias = gradient_start(bias, v_bias, 0.0, momentum, MOMENTUM, NESTEROV)
        for r in range(0, blocks_per_step):
            # 1. Prefetch the next row block: this step's next, or the next step's first (all lanes masked past the
            #    epoch's end). A short last step's trailing blocks are empty and add 0.
            next_start = step_start + (r + 1) * BLOCK_B
            next_step = next_start >= step_end
            next_end = tl.where(next_step, tl.minimum(step_end + batch_size, N), step_end)
            next_start = tl.where(next_step, step_end, next_start)
            x = x_head + _load_x_chunks(X_ptr, stride_xn, row, row_mask, D, CHUNK_D, X_PREFETCH, X_CHUNKS)
            next_block = _load_row_block(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, next_start, next_end,
                                         D, K, BLOCK_B, CHUNK_D, X_PREFETCH, BLOCK_K, LOSS)
            # 2. Z = s·X W + b: (s·X) W = s·(X W), the scale on the (BLOCK_B, BLOCK_K) tile.
            xw = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
            for k in tl.static_range(X_CHUNKS):
                xw = tl.dot(x[k].to(tl.float32), w[k], xw, input_precision=INPUT_PRECISION)
            z = xw * x_scale + bias[None, :]
            # 3. Loss and dZ, as the step kernels compute them.
            loss, dz = row_block_loss_dz(z, y, weight, grad_scale, K, BLOCK_K, LOSS)
            loss_total += loss.to(tl.float64)
            # 4. G_W += (s·X)ᵀ dZ = Xᵀ (s·dZ), G_b += Σ_i dZ_i.
            dz_scaled = dz * x_scale
            g_next = ()
            for k in tl.static_range(X_CHUNKS):
                g_next = g_next + (tl.dot(tl.trans(x[k].to(tl.float32)), dz_scaled, g[k],
                                          input_precision=INPUT_PRECISION),)
            g = g_next
            g_bias += tl.sum(dz, axis=0)
            row, row_mask, weight, y, x_head = next_block
        # 5. The update, as sgd_update_kernel: (Nesterov) momentum, then θ ← θ − lr·step; b only with an intercept.
        learning_rate = tl.load(learning_rates_ptr + t)
        w_next = ()
        v_next = ()
        for k in tl.static_range(X_CHUNKS):
            w_k, v_k = sgd_rule(w[k], g[k], v[k], learning_rate, momentum, MOMENTUM, NESTEROV)
            w_next = w_next + (w_k,)
            v_next = v_next + (v_k,)
        w = w_next
        v = v_next
        if FIT_INTERCEPT:
            bias, v_bias = sgd_rule(bias, g_bias, v_bias, learning_rate, momentum, MOMENTUM, NESTEROV)
    # 6. θ, v and the loss back to global memory, once.
    for k in tl.static_range(X_CHUNKS):
        ptrs, mask = param_tile(theta_ptr, k * CHUNK_D, 0, D, K, CHUNK_D, BLOCK_K, k == X_CHUNKS - 1)
        tl.store(ptrs, w[k], mask=mask)
        if MOMENTUM:
            tl.store(param_tile(velocity_ptr, k * CHUNK_D, 0, D, K, CHUNK_D, BLOCK_K, k == X_CHUNKS - 1)[0], v[k],
                     mask=mask)
    tl.store(theta_ptr + D * K + outputs, bias, mask=output_mask)
    if MOMENTUM:
        tl.store(velocity_ptr + D * K + outputs, v_bias, mask=output_mask)
    tl.store(loss_ptr, tl.load(loss_ptr) + loss_total)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher: check, launch one program
# ---------------------------------------------------------------------------------------------------------------------


def check_epoch_arguments(X, rows, theta, learning_rates, *, model, n_outputs, batch_size, momentum, velocity):
    """The checks every epoch launcher makes (this kernel's and ``epoch_split_sgd``'s): the model, X's rows, the
    epoch order, θ's and v's sizes, and one float32 rate per step of ``batch_size`` rows; raises ValueError."""
    n_features = X.shape[1]
    n_params = n_features * n_outputs + n_outputs
    n_steps = learning_rates.shape[0]
    if model not in MODEL_LOSSES:
        raise ValueError(f"model must be one of {tuple(MODEL_LOSSES)}, got {model!r}")
    if X.stride(1) != 1:
        raise ValueError("X must have contiguous rows (X.stride(1) == 1)")
    if rows.ndim != 1 or not rows.is_contiguous():
        raise ValueError("rows must be a contiguous 1-D index array")
    if theta.dtype != torch.float32 or theta.numel() != n_params:
        raise ValueError(f"theta must be float32 with D*K + K = {n_params} values")
    if momentum and (velocity is None or velocity.dtype != torch.float32 or velocity.numel() != n_params):
        raise ValueError(f"momentum needs a float32 velocity buffer of D*K + K = {n_params} values")
    if learning_rates.dtype != torch.float32:
        raise ValueError("learning_rates must be a float32 device vector")
    if batch_size < 1 or n_steps != -(-rows.shape[0] // batch_size):
        raise ValueError(f"{n_steps} learning rates for {rows.shape[0]} rows in batches of {batch_size}: need one "
                         "per step")


def launch_epoch_sgd(X, rows, y, theta, loss, learning_rates, *, model, n_outputs, batch_size, x_scale, config,
                     l2=0.0, momentum=0.0, nesterov=False, fit_intercept=True, velocity=None, sample_weight=None,
                     input_precision="ieee"):
    """Launch :func:`epoch_sgd_kernel`: ``len(learning_rates)`` steps over the epoch order ``rows``.

    ``y`` is the (N,) class ids (softmax) or contiguous (N, K) targets (sigmoid models); ``loss`` a (1,) float64
    accumulator; ``learning_rates`` float32, one per step. No device value is read: the launch never synchronises.
    """
    check_epoch_arguments(X, rows, theta, learning_rates, model=model, n_outputs=n_outputs, batch_size=batch_size,
                          momentum=momentum, velocity=velocity)
    n_features = X.shape[1]
    n_steps = learning_rates.shape[0]
    if not (config.x_chunks - 1) * config.chunk_d < n_features <= config.x_chunks * config.chunk_d:
        raise ValueError(f"config holds {config.x_chunks} tiles of {config.chunk_d} features, X has {n_features}")
    if n_outputs > config.block_k:
        raise ValueError(f"config holds {config.block_k} outputs, the model has {n_outputs}")
    epoch_sgd_kernel[(1,)](
        X_ptr=X, stride_xn=X.stride(0), rows_ptr=rows, y_ptr=y, sample_weight_ptr=sample_weight,
        learning_rates_ptr=learning_rates, theta_ptr=theta, velocity_ptr=velocity if momentum else None, loss_ptr=loss,
        N=rows.shape[0], D=n_features, K=n_outputs, batch_size=batch_size, n_steps=n_steps, x_scale=float(x_scale),
        l2=float(l2), momentum=float(momentum), **config.constexprs, LOSS=MODEL_LOSSES[model],
        MOMENTUM=bool(momentum), NESTEROV=bool(nesterov), FIT_INTERCEPT=bool(fit_intercept),
        INPUT_PRECISION=input_precision,
        num_warps=config.num_warps, num_stages=config.num_stages, **LAUNCH_OPTIONS,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: one epoch from host values (tests, benchmarks)
# ---------------------------------------------------------------------------------------------------------------------


def train_epoch(X, rows, y, theta, learning_rates, *, model, n_outputs, batch_size, x_scale=1.0, l2=0.0,
                momentum=0.0, nesterov=False, fit_intercept=True, velocity=None, sample_weight=None,
                input_precision="ieee"):
    """One epoch through :func:`epoch_sgd_kernel`; ``learning_rates`` may be any sequence of floats (one per step).

    Updates ``theta`` (and ``velocity``) in place; returns the epoch's summed weighted loss, (1,) float64.
    """
    n_features = X.shape[1]
    config = epoch_config(n_features, n_outputs, nesterov, sample_weight is not None)
    if config is None:
        raise ValueError(f"the epoch kernel holds at most {MAX_FEATURES} features and {MAX_OUTPUTS} outputs, got "
                         f"D = {n_features}, K = {n_outputs}")
    loss = torch.zeros(1, dtype=torch.float64, device=X.device)
    rates = torch.as_tensor(learning_rates, dtype=torch.float32).to(X.device)
    launch_epoch_sgd(X, rows, y, theta, loss, rates, model=model, n_outputs=n_outputs, batch_size=batch_size,
                     x_scale=x_scale, config=config, l2=l2, momentum=momentum, nesterov=nesterov,
                     fit_intercept=fit_intercept, velocity=velocity, sample_weight=sample_weight,
                     input_precision=input_precision)
    return loss
