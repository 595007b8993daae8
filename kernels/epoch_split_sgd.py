"""A whole epoch of minibatch SGD in one launch of P cooperating programs, the features split between them.

``epoch_sgd`` runs the epoch on one program, so one SM does every step's 2·B·D·K multiply-adds. Here program p
owns the feature slice ``S_p = [p·SLICE_D, (p+1)·SLICE_D)`` and keeps ``W[S_p]`` and ``v[S_p]`` on chip for the
whole epoch (the bias and its velocity are replicated: every program computes the same update of them). One step::

    phase A   Z_p = X[r, S_p] W[S_p]                (B, K) partial logits, written to exchange[t mod 2, p]
    barrier   every program has written its Z_p     (one grid barrier per step: P arrivals on a global counter)
    phase B   Z = s·(Z_0 + Z_1 + … + Z_{P−1}) + b   summed in the same order by every program, so all agree bitwise
              loss, dZ                              redundantly in every program (the epoch kernel's helpers)
              g_p = s·X[r, S_p]ᵀ dZ + l2·W[S_p]     and its own update (``sgd_rule``); every program updates b

Every program runs the same instructions on the same Z, so they hold the same b and dZ; program 0 adds the loss and
writes b at the end. The exchange is double-buffered: a program that has passed barrier t and writes its step-t+1
partials into the other half cannot reach half t mod 2 again before barrier t+1, which every program reaches only
after reading step t's partials. The next step's rows, labels, weights and ``X[r', S_p]`` are loaded before this
step's phase A (they do not depend on W), so their latency hides behind the step.

**Barrier.** ``barrier = [arrivals, finished]``, int32, zero at launch: each program's threads meet at a CTA barrier
(their exchange stores issued), one thread adds 1 to ``arrivals`` with release semantics at GPU scope, and the
program spins until it reads ``P·(t+1)``: one thread's acquire load, handed to the others behind a CTA barrier (how
Triton issues scalar atomics; cooperative groups' grid sync has the same shape). The exchange is read with ``.cg``
loads (from L2, past the SM's L1, which other SMs' writes do not invalidate). At the end each program adds 1 to
``finished`` after its last poll; the last to finish zeroes both, so the next launch needs no memset. The launch is
cooperative (``launch_cooperative_grid``): the driver refuses it rather than run P programs that are not all
resident, which a spin barrier would deadlock on. Under the interpreter programs run one after another, so only
P = 1 runs fused (its barrier waits for itself); :func:`run_split_phases` runs the same phase functions for any P with
the barrier as the boundary between two launches (W and v in θ between them, the replicated bias in a per-program
buffer).

**Products** (``precision``): ``"ieee"`` is fp32 FMA, as the other kernels' default. ``"mma"`` uses tensor cores
with fp32-grade results: X that is exact in fp16 (uint8 pixels, fp16) meets ``W = c·(W_hi + W_lo)``, two fp16 mma
passes, c = max|W_p| so both halves are normal fp16 (about 22 significant bits; X needs no low half); the backward
product splits ``dZ = c'·(dZ_hi + dZ_lo)`` the same way, c' = max|dZ| per row block, so (p − y)/B (≈ 1e-5) does not
fall into fp16 subnormals; c and c' are applied to the fp32 accumulator. float32 and bfloat16 X use ``tf32x3``. X is
widened once per step to the products' dtype. Row blocks and slice widths per mode are in :data:`DOT_TILES`.

**Scope.** sm_90 and later (:data:`MIN_CAPABILITY`), K ≤ :data:`MAX_OUTPUTS`, at most :data:`MAX_PROGRAMS` slices
(D ≤ 1024 for FMA and tf32x3, 2048 for the fp16 passes), batches of at most :data:`MAX_BATCH` rows; the rules and
options of ``epoch_sgd``.

**Time per step at MNIST shapes** (B = 128, D = 784, K = 10, momentum), every figure estimated. Inputs: H100/H200
at 1.75 GHz; one SM's dense fp16 mma peak ≈ 2 k MAC/clk, of which these N = 16 shapes reach an assumed 25–50%, tf32
half that; 128 fp32 FMA/clk per SM; an L2 round trip ≈ 300–600 clk; L2 → SM ≈ 64 B/clk per SM.

uint8 X, ``"mma"`` (13 programs of 64 features, the step's 128 rows in one fp16 dot per pass):

- X: 128 × 64 B = 8 KB per program per step, prefetched a step ahead: hidden (3.6 MB per SM per epoch).
- Phase A: W split (one CTA max-reduction) and 2 passes of 128·64·16 MACs = 262 k MACs: ≈ 0.3–0.4 µs.
- Barrier: the release reaches L2, the last arrival lands, one poll (load, acquire fence, 2 CTA barriers) sees
  it: ≈ 0.6–1.0 µs, plus the skew between programs.
- All-gather: 13 partials × 128 rows × 64 B (K padded to 16: vector loads) = 104 KB per program, all loads issued
  together: ≈ 0.9–1.1 µs.
- Softmax, loss and dZ on the (128, 16) tile, the dZ split, 2 backward passes (262 k MACs), the 64 × 16 update:
  ≈ 0.4–0.6 µs.

Sum ≈ 2.2–3.1 µs per step, **≈ 1.0–1.5 ms per epoch** (469 steps). float32 X (``"mma"``: tf32x3, 25 programs of 32
features) and ``"ieee"`` (FMA, 25 programs of 32 features, 131 k FMA per program ≈ 0.9 µs with its layout
conversions) gather 25 partials (200 KB, ≈ 1.8–2.2 µs): ≈ 3.3–4.3 µs, ≈ 1.5–2.0 ms per epoch. The all-gather and
the barrier dominate, so the 1 ms goal is reached only at the low end of the uint8 range; what would shorten them:
exchanging only the K real columns (40 of 64 bytes a row, if the loads stay vectorised), fewer and wider slices
(if registers allow), or the thread-block cluster with DSMEM of ``gpu-review.md`` §4 c3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

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
from .epoch_sgd import MODEL_LOSSES, check_epoch_arguments

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Outputs: one tile of 16 (tl.dot's minimum N), as in epoch_sgd.
BLOCK_K = 16
MAX_OUTPUTS = BLOCK_K
# A step's rows: a power of two from tl.dot's minimum M (16) up to 128, where the X slice of the step and of the
# prefetched next one still fit in registers beside W's slice.
MIN_BLOCK_B = 16
MAX_BATCH = 128
# Feature slices: powers of two from tl.dot's minimum K (16), aiming at 16 programs (each one more lengthens every
# program's all-gather by BLOCK_B·BLOCK_K·4 bytes), at most 32 (a grid the driver always keeps resident).
MIN_SLICE_D = 16
TARGET_PROGRAMS = 16
MAX_PROGRAMS = 32
# Per product mode: the rows of one tl.dot, the widest slice and the warps. The FMA path ("ieee") holds a dot's whole
# reduction in each thread's registers: 16 rows (backward) and 32 features (forward), as in epoch_sgd. tf32x3 splits
# both fp32 operands into hi and lo in registers: slices of 32 features. fp16 operands take half the registers: the
# step's rows and 64 features in one dot. Wider slices spill on sm_90 with the next step's X in flight.
DOT_TILES = {"ieee": (16, 32, 8), "tf32x3": (128, 32, 8), "fp16x2": (128, 64, 8)}
# No loop for the software pipeliner to stage: the next step's loads are written out in the kernel, and the exchange
# must never be read ahead of the barrier that precedes it.
NUM_STAGES = 1
# Compute capability the kernel is launched on, as epoch_sgd's.
MIN_CAPABILITY = (9, 0)
# "mma": the product mode per X dtype (fp16 holds uint8 and fp16 values exactly, tf32 bfloat16's and, in three
# passes, float32's); "ieee": FMA for every dtype.
MMA_PRODUCTS = {torch.uint8: "fp16x2", torch.float16: "fp16x2", torch.bfloat16: "tf32x3", torch.float32: "tf32x3"}
PRECISIONS = ("ieee", "mma")
# Runtime arguments that are not int32 or fp32 buffers, typed for the compile report (which sets X's and y's).
ARG_TYPES = {"rows_ptr": "*i64", "loss_ptr": "*fp64", "barrier_ptr": "*i32", "x_scale": "fp32", "l2": "fp32",
             "momentum": "fp32"}


@dataclass(frozen=True)
class SplitConfig:
    """Compile-time shape of :func:`epoch_split_sgd_kernel` for one (D, K, batch size, product mode)."""

    programs: int
    slice_d: int
    block_b: int
    block_rows: int
    dot: str
    num_warps: int
    block_k: int = BLOCK_K
    num_stages: int = NUM_STAGES

    @property
    def constexprs(self) -> dict:
        """The kernel's shape constexprs, as the launchers and the compile report pass them."""
        return {"BLOCK_B": self.block_b, "BLOCK_ROWS": self.block_rows, "SLICE_D": self.slice_d,
                "BLOCK_K": self.block_k, "PROGRAMS": self.programs, "DOT": self.dot}

    @property
    def label(self) -> str:
        return (f"{self.programs} programs x D{self.slice_d}, B{self.block_b} in {self.block_rows}-row {self.dot} "
                f"dots, K{self.block_k}, {self.num_warps} warps")


def dot_products(precision: str, x_dtype) -> str:
    """The kernel's ``DOT`` mode for ``precision`` ("ieee" or "mma") and X's torch dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return "ieee" if precision == "ieee" else MMA_PRODUCTS[x_dtype]


def split_config(n_features: int, n_outputs: int, batch_size: int, x_dtype, precision: str = "ieee",
                 max_programs: int = MAX_PROGRAMS) -> SplitConfig | None:
    """The kernel's shape for D, K, the batch size, X's dtype and ``precision``: slices as narrow as
    ``min(max_programs, 16)`` programs allow, no wider than the product mode's widest; None where it does not apply
    (more than ``max_programs`` slices, too many outputs or rows)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not (1 <= n_outputs <= MAX_OUTPUTS and 1 <= batch_size <= MAX_BATCH and 1 <= n_features
            and 1 <= max_programs <= MAX_PROGRAMS and x_dtype in MMA_PRODUCTS):
        return None
    dot = dot_products(precision, x_dtype)
    rows, widest, num_warps = DOT_TILES[dot]
    slice_d = min(widest, max(MIN_SLICE_D, triton.next_power_of_2(
        triton.cdiv(n_features, min(max_programs, TARGET_PROGRAMS)))))
    programs = triton.cdiv(n_features, slice_d)
    if programs > max_programs:
        return None
    block_b = max(MIN_BLOCK_B, triton.next_power_of_2(batch_size))
    return SplitConfig(programs=programs, slice_d=slice_d, block_b=block_b, block_rows=min(rows, block_b), dot=dot,
                       num_warps=num_warps)


# ---------------------------------------------------------------------------------------------------------------------
# Kernels: the phase functions, the fused kernel, and the two phase kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _load_step(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, start, end, d0, D, K, BLOCK_B: tl.constexpr,
               BLOCK_ROWS: tl.constexpr, SLICE_D: tl.constexpr, BLOCK_K: tl.constexpr, LOSS: tl.constexpr,
               DOT: tl.constexpr):
    """The step at positions ``start … end − 1`` of the epoch order (all masked once ``start ≥ N``), per row block
    of BLOCK_ROWS rows: the rows' weights (BLOCK_ROWS,), targets (:func:`load_targets`), and ``X[rows, S_p]``
    (BLOCK_ROWS, SLICE_D) in the products' dtype (fp16 for the fp16 passes, else fp32; exact either way): widened
    once here, one copy of X serves both products."""
    weights = ()
    targets = ()
    x = ()
    for r in tl.static_range(BLOCK_B // BLOCK_ROWS):
        lanes = start + r * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row, row_mask, weight = load_rows(rows_ptr, sample_weight_ptr, lanes, end)
        weights = weights + (weight,)
        targets = targets + (load_targets(y_ptr, row, row_mask, K, BLOCK_K, LOSS),)
        x_block = load_x_block(X_ptr, stride_xn, row, row_mask, d0, D, SLICE_D)
        if DOT == "fp16x2":
            x = x + (x_block.to(tl.float16),)
        else:
            x = x + (x_block.to(tl.float32),)
    return weights, targets, x


@triton.jit
def _fp16_pair(a):
    """``a ≈ c·(hi + lo)`` with hi, lo fp16 and c = max|a| (1 if a is 0): every |a/c| ≤ 1, so hi keeps 11 bits and lo
    the next 11 of each element down to 2^-14·c, where fp16 turns subnormal."""
    c = tl.max(tl.max(tl.abs(a), axis=1), axis=0)
    c = tl.where(c > 0.0, c, 1.0)
    a = a / c
    hi = a.to(tl.float16)
    return hi, (a - hi.to(tl.float32)).to(tl.float16), c


@triton.jit
def _exchange_tile(exchange_ptr, parity, program, r, BLOCK_B: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                   BLOCK_K: tl.constexpr, PROGRAMS: tl.constexpr):
    """Pointers of row block r of program ``program``'s partial logits in half ``parity`` of the exchange buffer,
    laid out (2, PROGRAMS, BLOCK_B, BLOCK_K): a (BLOCK_ROWS, BLOCK_K) tile. Whole 64-byte rows, padding included:
    vector loads from one base pointer (a row of K = 10 would take a pointer per element)."""
    tile = tl.arange(0, BLOCK_ROWS)[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    return exchange_ptr + ((parity * PROGRAMS + program) * BLOCK_B + r * BLOCK_ROWS) * BLOCK_K + tile


@triton.jit
def _store_slice_logits(exchange_ptr, parity, program, x, w, BLOCK_B: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                        BLOCK_K: tl.constexpr, PROGRAMS: tl.constexpr, DOT: tl.constexpr):
    """Phase A: ``Z_p = X[r, S_p] W[S_p]`` (BLOCK_B, BLOCK_K) fp32, unscaled by s, into half ``parity``."""
    if DOT == "fp16x2":
        # X is exact in fp16: X·W = c·(X·W_hi + X·W_lo), two passes accumulated in fp32.
        w_hi, w_lo, c = _fp16_pair(w)
    for r in tl.static_range(BLOCK_B // BLOCK_ROWS):
        if DOT == "fp16x2":
            xw = tl.dot(x[r], w_lo, tl.dot(x[r], w_hi)) * c
        else:
            xw = tl.dot(x[r], w, input_precision=DOT)
        tl.store(_exchange_tile(exchange_ptr, parity, program, r, BLOCK_B, BLOCK_ROWS, BLOCK_K, PROGRAMS), xw)


@triton.jit
def _grid_barrier(barrier_ptr, arrivals):
    """Wait until ``arrivals`` programs have arrived at ``barrier_ptr`` (counting this one's arrival): every global
    store this program issued before is visible to every program after it."""
    # Triton issues a scalar atomic from one thread and hands its result to the others through shared memory behind
    # a CTA barrier: the CTA barrier here orders every thread's stores before that thread's release, and its acquire
    # before every thread's later loads (the pattern of cooperative groups' grid sync).
    tl.debug_barrier()
    tl.atomic_add(barrier_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_load(barrier_ptr, sem="acquire", scope="gpu")
    while arrived < arrivals:
        arrived = tl.atomic_load(barrier_ptr, sem="acquire", scope="gpu")


@triton.jit
def _release_barrier(barrier_ptr, PROGRAMS: tl.constexpr):
    """After this program's last wait: count it finished; the last program to finish zeroes the counters."""
    finished = tl.atomic_add(barrier_ptr + 1, 1, sem="acq_rel", scope="gpu")
    if finished == PROGRAMS - 1:
        tl.store(barrier_ptr + tl.arange(0, 2), tl.zeros((2,), dtype=tl.int32))


@triton.jit
def _step_update(exchange_ptr, parity, x, targets, weights, grad_scale, w, v, bias, v_bias, learning_rate, x_scale,
                 l2, momentum, K, BLOCK_B: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
                 PROGRAMS: tl.constexpr, LOSS: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
                 FIT_INTERCEPT: tl.constexpr, DOT: tl.constexpr):
    """Phase B, once every partial of half ``parity`` is written: ``(loss, W[S_p], v[S_p], b, v_b)`` after the step."""
    # g starts at l2·W (+ μ v): the heavy-ball sum is the new v itself.
    g = gradient_start(w, v, l2, momentum, MOMENTUM, NESTEROV)
    g_bias = gradient_start(bias, v_bias, 0.0, momentum, MOMENTUM, NESTEROV)
    loss = tl.zeros((), dtype=tl.float32)
    for r in tl.static_range(BLOCK_B // BLOCK_ROWS):
        # 1. Z = s·Σ_q Z_q + b, q = 0 … P−1 in this order in every program (fp32 addition does not commute bitwise).
        #    ".cg": from L2, past this SM's L1, which the other programs' writes do not invalidate.
        partials = _exchange_tile(exchange_ptr, parity, 0, r, BLOCK_B, BLOCK_ROWS, BLOCK_K, PROGRAMS)
        xw = tl.load(partials, cache_modifier=".cg")
        for q in tl.static_range(1, PROGRAMS):
            xw += tl.load(partials + q * (BLOCK_B * BLOCK_K), cache_modifier=".cg")
        z = xw * x_scale + bias[None, :]
        # 2. Loss and dZ, as the step kernels compute them.
        block_loss, dz = row_block_loss_dz(z, targets[r], weights[r], grad_scale, K, BLOCK_K, LOSS)
        loss += block_loss
        g_bias += tl.sum(dz, axis=0)
        # 3. g += (s·X[r, S_p])ᵀ dZ = X[r, S_p]ᵀ (s·dZ); in fp16, dZ = c·(dZ_hi + dZ_lo) with c·s on the fp32 sum.
        if DOT == "fp16x2":
            dz_hi, dz_lo, c = _fp16_pair(dz)
            g += tl.dot(tl.trans(x[r]), dz_lo, tl.dot(tl.trans(x[r]), dz_hi)) * (c * x_scale)
        else:
            g = tl.dot(tl.trans(x[r]), dz * x_scale, g, input_precision=DOT)
    # 4. The update, as sgd_update_kernel; b only with an intercept.
    w, v = sgd_rule(w, g, v, learning_rate, momentum, MOMENTUM, NESTEROV)
    if FIT_INTERCEPT:
        bias, v_bias = sgd_rule(bias, g_bias, v_bias, learning_rate, momentum, MOMENTUM, NESTEROV)
    return loss, w, v, bias, v_bias


@triton.jit
def _slice_tile(base_ptr, d0, D, K, SLICE_D: tl.constexpr, BLOCK_K: tl.constexpr):
    """Pointers and mask of ``W[S_p]`` (or v's) in a flat ``[W (D, K), b]`` vector: (SLICE_D, BLOCK_K)."""
    return param_tile(base_ptr, d0, 0, D, K, SLICE_D, BLOCK_K, True)


@triton.jit
def epoch_split_sgd_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, learning_rates_ptr, theta_ptr, velocity_ptr, loss_ptr,
    exchange_ptr, barrier_ptr,
    N, D, K, batch_size, n_steps, x_scale, l2, momentum,
    BLOCK_B: tl.constexpr, BLOCK_ROWS: tl.constexpr, SLICE_D: tl.constexpr, BLOCK_K: tl.constexpr,
    PROGRAMS: tl.constexpr, DOT: tl.constexpr, LOSS: tl.constexpr,
    MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, FIT_INTERCEPT: tl.constexpr,
):
    """``n_steps`` SGD steps over the epoch order ``rows[:N]`` in batches of ``batch_size`` (the last takes the rest),
    program p on features ``p·SLICE_D …``; launch on a grid of (PROGRAMS,), cooperatively.

    ``theta`` (fp32 ``[W (D, K) row-major, b (K,)]``) and ``velocity`` are updated in place; the epoch's summed
    weighted loss is added to the fp64 ``loss``; ``exchange`` is fp32 (2, PROGRAMS, BLOCK_B, BLOCK_K) scratch and
    ``barrier`` two int32 zeros (zero again when the kernel ends).
    """
    program = tl.program_id(0)
    d0 = program * SLICE_D
    outputs = tl.arange(0, BLOCK_K)
    output_mask = outputs < K
    # 0. This program's slice of W and v onto the chip, and the replicated b, v_b, once; padded features and outputs
    #    are 0 and stay 0.
    slice_ptrs, slice_mask = _slice_tile(theta_ptr, d0, D, K, SLICE_D, BLOCK_K)
    w = tl.load(slice_ptrs, mask=slice_mask, other=0.0)
    bias = tl.load(theta_ptr + D * K + outputs, mask=output_mask, other=0.0)
    if MOMENTUM:
        v = tl.load(_slice_tile(velocity_ptr, d0, D, K, SLICE_D, BLOCK_K)[0], mask=slice_mask, other=0.0)
        v_bias = tl.load(velocity_ptr + D * K + outputs, mask=output_mask, other=0.0)
    else:
        v = tl.zeros((SLICE_D, BLOCK_K), dtype=tl.float32)
        v_bias = tl.zeros((BLOCK_K,), dtype=tl.float32)
    loss_total = tl.zeros((), dtype=tl.float64)
    step = _load_step(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, 0, tl.minimum(batch_size, N), d0, D, K,
                      BLOCK_B, BLOCK_ROWS, SLICE_D, BLOCK_K, LOSS, DOT)
    for t in range(0, n_steps):
        step_start = t * batch_size
        step_end = tl.minimum(step_start + batch_size, N)
        weights, targets, x = step
        # 1. Prefetch the next step (all lanes masked past the epoch's end): it does not depend on W.
        step = _load_step(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, step_end,
                          tl.minimum(step_end + batch_size, N), d0, D, K, BLOCK_B, BLOCK_ROWS, SLICE_D, BLOCK_K, LOSS,
                          DOT)
        # 2. Phase A: this slice's partial logits into half t mod 2 of the exchange.
        parity = t % 2
        _store_slice_logits(exchange_ptr, parity, program, x, w, BLOCK_B, BLOCK_ROWS, BLOCK_K, PROGRAMS, DOT)
        # 3. Every program's partials written.
        _grid_barrier(barrier_ptr, (t + 1) * PROGRAMS)
        # 4. Phase B: the logits, loss and dZ (redundantly), this slice's gradient and update.
        loss, w, v, bias, v_bias = _step_update(
            exchange_ptr, parity, x, targets, weights, 1.0 / (step_end - step_start).to(tl.float32), w, v, bias,
            v_bias, tl.load(learning_rates_ptr + t), x_scale, l2, momentum, K, BLOCK_B, BLOCK_ROWS, BLOCK_K, PROGRAMS,
            LOSS, MOMENTUM, NESTEROV, FIT_INTERCEPT, DOT)
        loss_total += loss.to(tl.float64)
    # 5. The slice back to θ and v once; program 0 writes b, v_b and the loss (every program holds the same).
    tl.store(slice_ptrs, w, mask=slice_mask)
    if MOMENTUM:
        tl.store(_slice_tile(velocity_ptr, d0, D, K, SLICE_D, BLOCK_K)[0], v, mask=slice_mask)
    if program == 0:
        tl.store(theta_ptr + D * K + outputs, bias, mask=output_mask)
        if MOMENTUM:
            tl.store(velocity_ptr + D * K + outputs, v_bias, mask=output_mask)
        tl.store(loss_ptr, tl.load(loss_ptr) + loss_total)
    _release_barrier(barrier_ptr, PROGRAMS)


@triton.jit
def split_logits_phase_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, theta_ptr, exchange_ptr,
    N, D, K, batch_size, step_index,
    BLOCK_B: tl.constexpr, BLOCK_ROWS: tl.constexpr, SLICE_D: tl.constexpr, BLOCK_K: tl.constexpr,
    PROGRAMS: tl.constexpr, DOT: tl.constexpr, LOSS: tl.constexpr,
):
    """Phase A of step ``step_index`` as its own launch (grid (PROGRAMS,)), W's slice read from θ."""
    program = tl.program_id(0)
    d0 = program * SLICE_D
    step_start = step_index * batch_size
    _, _, x = _load_step(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, step_start,
                         tl.minimum(step_start + batch_size, N), d0, D, K, BLOCK_B, BLOCK_ROWS, SLICE_D, BLOCK_K, LOSS,
                         DOT)
    slice_ptrs, slice_mask = _slice_tile(theta_ptr, d0, D, K, SLICE_D, BLOCK_K)
    _store_slice_logits(exchange_ptr, step_index % 2, program, x, tl.load(slice_ptrs, mask=slice_mask, other=0.0),
                        BLOCK_B, BLOCK_ROWS, BLOCK_K, PROGRAMS, DOT)


@triton.jit
def split_update_phase_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, learning_rates_ptr, theta_ptr, velocity_ptr, bias_state_ptr,
    loss_ptr, exchange_ptr,
    N, D, K, batch_size, step_index, x_scale, l2, momentum,
    BLOCK_B: tl.constexpr, BLOCK_ROWS: tl.constexpr, SLICE_D: tl.constexpr, BLOCK_K: tl.constexpr,
    PROGRAMS: tl.constexpr, DOT: tl.constexpr, LOSS: tl.constexpr,
    MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, FIT_INTERCEPT: tl.constexpr,
):
    """Phase B of step ``step_index`` as its own launch: W's and v's slices in θ and v, each program's copy of
    ``[b, v_b]`` in ``bias_state`` (PROGRAMS, 2, BLOCK_K), the loss added by program 0."""
    program = tl.program_id(0)
    d0 = program * SLICE_D
    step_start = step_index * batch_size
    step_end = tl.minimum(step_start + batch_size, N)
    weights, targets, x = _load_step(X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, step_start, step_end, d0,
                                     D, K, BLOCK_B, BLOCK_ROWS, SLICE_D, BLOCK_K, LOSS, DOT)
    slice_ptrs, slice_mask = _slice_tile(theta_ptr, d0, D, K, SLICE_D, BLOCK_K)
    if MOMENTUM:
        v = tl.load(_slice_tile(velocity_ptr, d0, D, K, SLICE_D, BLOCK_K)[0], mask=slice_mask, other=0.0)
    else:
        v = tl.zeros((SLICE_D, BLOCK_K), dtype=tl.float32)
    bias_ptrs = bias_state_ptr + program * (2 * BLOCK_K) + tl.arange(0, BLOCK_K)
    loss, w, v, bias, v_bias = _step_update(
        exchange_ptr, step_index % 2, x, targets, weights, 1.0 / (step_end - step_start).to(tl.float32),
        tl.load(slice_ptrs, mask=slice_mask, other=0.0), v, tl.load(bias_ptrs), tl.load(bias_ptrs + BLOCK_K),
        tl.load(learning_rates_ptr + step_index), x_scale, l2, momentum, K, BLOCK_B, BLOCK_ROWS, BLOCK_K, PROGRAMS,
        LOSS, MOMENTUM, NESTEROV, FIT_INTERCEPT, DOT)
    tl.store(slice_ptrs, w, mask=slice_mask)
    if MOMENTUM:
        tl.store(_slice_tile(velocity_ptr, d0, D, K, SLICE_D, BLOCK_K)[0], v, mask=slice_mask)
    tl.store(bias_ptrs, bias)
    tl.store(bias_ptrs + BLOCK_K, v_bias)
    if program == 0:
        tl.store(loss_ptr, tl.load(loss_ptr) + loss.to(tl.float64))


# ---------------------------------------------------------------------------------------------------------------------
# Launchers: check, then one cooperative launch, or two launches per step (the phased harness)
# ---------------------------------------------------------------------------------------------------------------------


def split_workspace(config: SplitConfig, device) -> tuple:
    """``(exchange, barrier)`` for :func:`launch_epoch_split_sgd`: fp32 (2, P, BLOCK_B, BLOCK_K) scratch and the two
    int32 barrier counters, zero (the kernel leaves them zero, so one workspace serves every epoch of a stepper)."""
    exchange = torch.empty((2, config.programs, config.block_b, config.block_k), dtype=torch.float32, device=device)
    return exchange, torch.zeros(2, dtype=torch.int32, device=device)


def _check_split(X, rows, theta, learning_rates, batch_size, config, *, model, n_outputs, momentum,
                 velocity) -> dict:
    """The checks of both launchers; returns the keyword arguments they share."""
    check_epoch_arguments(X, rows, theta, learning_rates, model=model, n_outputs=n_outputs, batch_size=batch_size,
                          momentum=momentum, velocity=velocity)
    n_features = X.shape[1]
    if not (config.programs - 1) * config.slice_d < n_features <= config.programs * config.slice_d:
        raise ValueError(f"config holds {config.programs} slices of {config.slice_d} features, X has {n_features}")
    if n_outputs > config.block_k or batch_size > config.block_b:
        raise ValueError(f"config holds {config.block_k} outputs and {config.block_b} rows per step, got "
                         f"{n_outputs} and {batch_size}")
    if config.dot != "ieee" and MMA_PRODUCTS.get(X.dtype) != config.dot:
        raise ValueError(f"{config.dot} products are not exact for X of {X.dtype}")
    return dict(X_ptr=X, stride_xn=X.stride(0), rows_ptr=rows, N=rows.shape[0], D=n_features, K=n_outputs,
                batch_size=batch_size, **config.constexprs, LOSS=MODEL_LOSSES[model], num_warps=config.num_warps,
                num_stages=config.num_stages, **LAUNCH_OPTIONS)


def launch_epoch_split_sgd(X, rows, y, theta, loss, learning_rates, *, model, n_outputs, batch_size, x_scale, config,
                           exchange, barrier, l2=0.0, momentum=0.0, nesterov=False, fit_intercept=True, velocity=None,
                           sample_weight=None):
    """Launch :func:`epoch_split_sgd_kernel` on ``config.programs`` cooperative programs: ``len(learning_rates)``
    steps over the epoch order ``rows``. Arguments as ``epoch_sgd.launch_epoch_sgd``'s, with the workspace of
    :func:`split_workspace`; ``config`` (:func:`split_config`) holds the product mode. No device value is read: the
    launch never synchronises.
    """
    common = _check_split(X, rows, theta, learning_rates, batch_size, config, model=model, n_outputs=n_outputs,
                          momentum=momentum, velocity=velocity)
    if isinstance(epoch_split_sgd_kernel, InterpretedFunction) and config.programs > 1:
        raise ValueError("the interpreter runs programs one after another, so more than one program would wait at "
                         "the grid barrier forever: use run_split_phases, or a config of one program")
    if exchange.numel() != 2 * config.programs * config.block_b * config.block_k or barrier.dtype != torch.int32:
        raise ValueError("exchange and barrier must be split_workspace(config)'s")
    epoch_split_sgd_kernel[(config.programs,)](
        y_ptr=y, sample_weight_ptr=sample_weight, learning_rates_ptr=learning_rates, theta_ptr=theta,
        velocity_ptr=velocity if momentum else None, loss_ptr=loss, exchange_ptr=exchange, barrier_ptr=barrier,
        n_steps=learning_rates.shape[0], x_scale=float(x_scale), l2=float(l2), momentum=float(momentum),
        MOMENTUM=bool(momentum), NESTEROV=bool(nesterov), FIT_INTERCEPT=bool(fit_intercept),
        launch_cooperative_grid=True, **common,
    )


def run_split_phases(X, rows, y, theta, loss, learning_rates, *, model, n_outputs, batch_size, x_scale, config,
                     l2=0.0, momentum=0.0, nesterov=False, fit_intercept=True, velocity=None, sample_weight=None):
    """The same epoch as :func:`launch_epoch_split_sgd` with each phase its own launch (two per step, the kernel
    boundary standing in for the grid barrier): runs any number of programs under the interpreter."""
    common = _check_split(X, rows, theta, learning_rates, batch_size, config, model=model, n_outputs=n_outputs,
                          momentum=momentum, velocity=velocity)
    n_weights = X.shape[1] * n_outputs
    exchange, _ = split_workspace(config, X.device)
    # Every program's copy of [b, v_b], padded to BLOCK_K: the kernel's replicated registers.
    bias_state = torch.zeros((config.programs, 2, config.block_k), dtype=torch.float32, device=X.device)
    bias_state[:, 0, :n_outputs] = theta[n_weights:]
    if momentum:
        bias_state[:, 1, :n_outputs] = velocity[n_weights:]
    for step_index in range(learning_rates.shape[0]):
        split_logits_phase_kernel[(config.programs,)](
            y_ptr=y, sample_weight_ptr=sample_weight, theta_ptr=theta, exchange_ptr=exchange, step_index=step_index,
            **common)
        split_update_phase_kernel[(config.programs,)](
            y_ptr=y, sample_weight_ptr=sample_weight, learning_rates_ptr=learning_rates, theta_ptr=theta,
            velocity_ptr=velocity if momentum else None, bias_state_ptr=bias_state, loss_ptr=loss,
            exchange_ptr=exchange, step_index=step_index, x_scale=float(x_scale), l2=float(l2),
            momentum=float(momentum), MOMENTUM=bool(momentum), NESTEROV=bool(nesterov),
            FIT_INTERCEPT=bool(fit_intercept), **common)
    theta[n_weights:] = bias_state[0, 0, :n_outputs]
    if momentum:
        velocity[n_weights:] = bias_state[0, 1, :n_outputs]


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: one epoch from host values (tests, benchmarks)
# ---------------------------------------------------------------------------------------------------------------------


def train_epoch(X, rows, y, theta, learning_rates, *, model, n_outputs, batch_size, x_scale=1.0, l2=0.0,
                momentum=0.0, nesterov=False, fit_intercept=True, velocity=None, sample_weight=None,
                precision="ieee", max_programs=MAX_PROGRAMS, phased=False):
    """One epoch over at most ``max_programs`` programs, fused (one launch) or ``phased`` (two launches per step);
    ``learning_rates`` may be any sequence of floats. Updates ``theta`` (and ``velocity``) in place; returns the
    epoch's summed weighted loss, (1,) float64."""
    config = split_config(X.shape[1], n_outputs, batch_size, X.dtype, precision, max_programs)
    if config is None:
        raise ValueError(f"the split epoch kernel holds at most {max_programs} slices of features, {MAX_OUTPUTS} "
                         f"outputs and {MAX_BATCH} rows per step, got D = {X.shape[1]}, K = {n_outputs}, "
                         f"B = {batch_size}")
    loss = torch.zeros(1, dtype=torch.float64, device=X.device)
    rates = torch.as_tensor(learning_rates, dtype=torch.float32).to(X.device)
    options = dict(model=model, n_outputs=n_outputs, batch_size=batch_size, x_scale=x_scale, config=config, l2=l2,
                   momentum=momentum, nesterov=nesterov, fit_intercept=fit_intercept, velocity=velocity,
                   sample_weight=sample_weight)
    if phased:
        run_split_phases(X, rows, y, theta, loss, rates, **options)
    else:
        exchange, barrier = split_workspace(config, X.device)
        launch_epoch_split_sgd(X, rows, y, theta, loss, rates, exchange=exchange, barrier=barrier, **options)
    return loss
