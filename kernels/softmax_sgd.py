"""One fused kernel for the loss and gradient of softmax regression on a minibatch given as row indices.

For the minibatch rows ``r`` (indices into the device-resident ``X``; shuffling never copies ``X``)::

    Z  = s·X[r] W + b                       (B, C), fp32 accumulation whatever X's dtype
    P  = softmax(Z),  CE_i = lse(Z_i) − Z_{i,y_i}
    dZ = w_i (P − onehot(y)) / B            w_i = sample weight (1 without)
    dW += s·X[r]ᵀ dZ,   db += Σ_i dZ_i,   loss += Σ_i w_i CE_i

Nothing of size B·C is written: the logits live in registers, one (BLOCK_B, BLOCK_C) tile at a time. When ``C``
does not fit one class tile the kernel makes two sweeps over the class tiles, an online log-sum-exp first and the
gradient second, recomputing each logits tile rather than storing it, so the extra memory stays O(B). The grid
is over row blocks only, so at C = 32768 each of the B/16 programs sweeps all of W twice (from L2 when it fits, else
DRAM); spreading the classes over programs as well would need a cross-program log-sum-exp, i.e. a third launch.

Which configurations keep ``X[r]`` resident (loaded from global memory once per row block, then used by both the
forward and the backward product) is decided by :func:`softmax_config`:

- C ≤ 64 (one class tile) and D ≤ 1024, which includes MNIST (D = 784, C = 10) in every dtype, atomics or
  deterministic: the (16, D_pad) tile of ``X[r]`` is loaded once in its own dtype (16 KB of uint8, 32 KB of bf16/fp16,
  64 KB of fp32 per program, spread over 256 threads) and both sweeps run over it one class column at a time: the
  logits column z_c is an fp32 product and row sum, dW[:, c] a product and column sum, each element widened to fp32
  as it is used. No tl.dot: an fp32 tl.dot over the whole padded D wants K = 1024 per thread and took 255 registers,
  a 1.3–1.5 KB spill stack and 128 KB of shared memory at 8 warps (at 16: 255 registers, 96–216 B of spills).
  ``INPUT_PRECISION`` has no effect here (the products are plain fp32 FMAs, so TF32 cannot change them).
- C > 64 and D ≤ 1024 (C = 1000, C = 32768 at D = 784), every dtype, atomics or deterministic: ``X[r]`` is loaded
  once, before both class-tile loops, as cdiv(D, 32) separate (16, 32) chunks (25 at D = 784); the compiler keeps
  them in shared memory for the whole row block (51,200 B at D = 784, widened to fp32 for every dtype; the backward
  reads the same buffers transposed) and each (16, 16) class tile's forward and backward GEMMs run chunk by chunk
  from there. 110–112 registers (capped at 112, see the constants), no spills, on sm_80 and sm_90. With TF32 the mma
  operands keep two swizzled copies (104 KB of shared memory) and 192–255 registers, still no spills.
- Otherwise (D > 1024) ``X[r]`` is streamed in ``BLOCK_D`` chunks by the forward sweep and again by the backward
  sweep, per class tile: DRAM sees each element once, the program's 16 rows being read again from L2.

Checked on the sm_80 and sm_90 builds of D = 784, C = 10 (every dtype, atomics and deterministic): the TTGIR has one
load of the (16, 1024) X tile, in the row-block loop and outside both class loops, and the SASS has the matching
16-byte loads (LDG.E.128: 16 per thread for fp32, 8 for bf16/fp16, 4 for uint8, i.e. 16·1024·itemsize bytes per
program) outside the class loops, whose only loads are a column of W and a bias. At C = 1000 and 32768 the TTGIR has
the 25 chunk loads, each followed by its ``ttg.local_alloc``, in the row-block loop and none inside the class loops,
which read X only through ``ttg.local_load``; the sm_90 SASS of the uint8 build at C = 32768 has the matching 25
two-byte loads (LDG.E.U16: 16·32 bytes per chunk over 256 threads), all between the head of the row-block loop and
the first class loop. ``linclass-gpu kernels report`` counts both per build (the ``X loads``
column: loads of X, and in parentheses those inside a class or feature loop), and tests/test_kernel_report.py asserts
it for every shipped configuration.

The parameter update is not here: ``sgd_update.py`` applies it in a second small launch, which also resets the
gradient buffer, so an SGD step is exactly 2 launches and 0 host synchronisations.

Bytes moved per SGD step, MNIST shapes B=128, D=784, C=10 (``linclass_gpu.kernel_report.bytes_moved``: compulsory
global-memory traffic, each distinct array counted once per kernel touching it)::

                           fused (2 launches)   unfused (gather, [widen], matmul, softmax, loss, dZ, matmul, Σ, update)
    X float32                    591,864 B        1,802,060 B   (3.0x)
    X uint8 (s = 1/255)          290,808 B        1,701,708 B   (5.9x: unfused must widen X[r] to float32 first)

The fused path reads ``X[r]`` once from global memory and never writes it; the unfused sequence gathers it (read +
write), reads it in both matmuls and moves the (B, C) logits, probabilities and dZ through memory. The fused path
moves six θ-sized arrays to the unfused four (atomic accumulator and its reset), so with few rows and many classes it
can move slightly more (B=64, D=784, C=1000: 4% more). The model counts compulsory traffic, so keeping X resident at
large C does not change it; what it removes is L2 traffic: streamed, each program read its 16 × 784 fp32 rows twice
per 64-class tile, 2 · 512 · 50 KB = 51 MB per row block at C = 32768, next to the 205 MB of its two sweeps over W,
which stay (past D = 1024 they still apply).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._tiles import (NARROW_BLOCK_N, WIDE_BLOCK_N, accumulate, add_loss, dot_tile_shape, load_row_block,
                     load_x_block, load_x_tile, online_logsumexp, param_tile, row_block_lanes, softmax_dz)

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Minibatch rows per program: 16 is tl.dot's minimum M (forward) and K (backward). More rows per program would mean
# fewer W re-reads, but at B = 128 already only 8 programs share the GPU.
BLOCK_B = 16
# The streamed path (D > 1024; every D ≤ 1024 keeps X resident, below) takes _tiles.dot_tile_shape's (BLOCK_D,
# BLOCK_C) tiles: 64 × 16 for C ≤ 16 (padded with −inf logits to tl.dot's minimum N of 16), 32 × 64 beyond, one tile
# up to 64 classes and a class-tile loop with an online log-sum-exp past it.
NUM_WARPS = 8
# Register cap handed to ptxas (.maxnreg). Left to itself, ptxas aims at 2–3 resident 256-thread programs per SM and
# caps the kernel at 80 or 128 registers, spilling 8–16 bytes per thread to local memory in half the shipped
# configurations (sm_80 and sm_90 alike). With an explicit cap of 255 it allocates what the kernel needs (80–146
# registers here) and spills nothing; at B = 128 there are only 8 programs per step, so occupancy is not what limits.
MAX_REGISTERS = 255
# X resident, one class at a time (every C that fits one class tile, C ≤ 64): X[rows] is loaded once as a
# (16, D_pad) tile in its own dtype and both products run over it column by column (FMA and a row / feature sum,
# no tl.dot), for D_pad up to 1024 (MNIST's 784). At 8 warps a thread holds 64 elements of the tile (16 rows × 4
# features of float32, 4 rows × 16 of uint8): 64 registers of float32 X, 16 of uint8; 183–254 registers in all and no
# spills on sm_80 / sm_90 at D = 784. An fp32 tl.dot over the whole 16 × 1024 tile instead took 255 registers, a
# 1.3–1.5 KB stack (spills) and 128 KB of shared memory at 8 warps, and still spilled at 16 (where 255 registers per
# thread could not even launch: 512 threads × 128 fill the register file). No feature loop is left to pipeline,
# hence one stage.
RESIDENT_D_MAX = 1024
RESIDENT_NUM_STAGES = 1
# X resident in chunks, class tiles by tl.dot (C > 64, D ≤ 1024): X[rows] is loaded once as cdiv(D, 32) separate
# (16, 32) tiles (25 at D = 784, so 800 padded features rather than 1024) and the compiler keeps them in shared memory
# for the whole row block (one ttg.local_alloc each, before the class loops; the backward GEMM reads the same
# buffers transposed): 16·800·4 = 51,200 B at D = 784 whatever X's dtype, since the tile is widened to float32 before
# it is stored. Every (16, 16) class tile then runs 25 chunk GEMMs from shared memory. Measured on sm_80 / sm_90 at
# D = 784, C = 1000 and 32768, every dtype, atomics and deterministic (32 × 16 tiles, 8 warps): at a 255-register cap
# ptxas fills all 255 and spills 8–48 B of loop-invariant scalars on sm_90; 16 × 16, 64 × 16, 32 × 32 and 4 warps
# did the same. A cap of 112 gives it no room to over-schedule: 110–112 registers and no spills in all 32 builds (96
# and 104 also, but 96 spilled 8 B at D = 100 and 513, 120–144 spilled 8–16 B). 112 registers also let two programs
# share an SM (2 × 256 × 112 < 65,536). TF32 changes the GEMMs to mma, whose fragments need more: 56–72 B of spills
# at 112, none at 192 or 255, so TF32 launches keep MAX_REGISTERS (and hold X twice in shared memory, once per
# operand swizzle: 104 KB at D = 784).
CHUNK_BLOCK_D, CHUNK_BLOCK_C = 32, 16
CHUNK_MAX_REGISTERS = 112


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

    Separate tensors rather than one (BLOCK_B, X_CHUNKS·BLOCK_D) tile so each chunk can feed its own tl.dot: the
    products index them with the compile-time k of a static loop.
    """
    chunks = ()
    for k in tl.static_range(X_CHUNKS):
        chunks = chunks + (load_x_block(X_ptr, stride_xn, row, row_mask, k * BLOCK_D, D, BLOCK_D),)
    return chunks


@triton.jit
def _logits_tile(x, X_ptr, stride_xn, row, row_mask, theta_ptr, c0, D, C, x_scale,
                 BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
                 X_CHUNKS: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Logits of class tile ``c0 : c0 + BLOCK_C``; padded classes −inf. W is ``theta[:D·C]`` row-major, b follows.

    ``x`` is the tuple of resident chunks (``X_CHUNKS > 0``; only the last may pass D) or unused (X streamed).
    """
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
                   DETERMINISTIC: tl.constexpr, STORE_PROBS: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """dZ of one class tile and its contribution to dW[:, tile] and db[tile]."""
    cols = c0 + tl.arange(0, BLOCK_C)
    col_mask = cols < C
    # Mean over the minibatch (grad_scale = 1/B), weighted per row; masked rows have weight 0.
    p, dz = softmax_dz(z, y, m, inv_s, weight * grad_scale, c0, BLOCK_C)
    if STORE_PROBS:
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
    """Logits column ``c`` over the resident tile: ``z_c = s·X[rows] W[:, c] + b_c``, a (BLOCK_B,) vector.

    A product and a sum over the features, in fp32 whatever X's dtype (each element widened as it is used). A thread
    holds a few rows × features of the tile (16 × 4 of float32, 4 × 16 of uint8): it sums its own first, then across
    threads (shuffles, and shared memory between warps).
    """
    w_c = tl.load(theta_ptr + feats * C + c, mask=feats < D, other=0.0)
    return tl.sum(x.to(tl.float32) * w_c[None, :], axis=1) * x_scale + tl.load(theta_ptr + D * C + c)


@triton.jit
def _resident_row_block(x, y, weight, lanes, row_mask, theta_ptr, grad_ptr, probs_ptr, D, C, x_scale, grad_scale,
                        visit, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, DETERMINISTIC: tl.constexpr,
                        STORE_PROBS: tl.constexpr):
    """Steps 2–4 of :func:`softmax_sgd_kernel` on the resident tile ``x = X[rows]``, one class column at a time.

    Two sweeps over the classes, like the class-tile loop but with tiles one class wide: nothing (B, C)-sized is
    kept, only (BLOCK_B,) vectors, and each logits column is computed again in the second sweep rather than held.
    Returns the row block's weighted loss.
    """
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
        if STORE_PROBS:
            tl.store(probs_ptr + lanes * C + c, p_c, mask=row_mask)
        dz_c = (p_c - tl.where(y == c, 1.0, 0.0)) * row_scale
        # Summed over the rows: within a thread first (all 16 rows of its features for float32), then across warps.
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
    X_CHUNKS: tl.constexpr, ONE_CLASS_TILE: tl.constexpr, DETERMINISTIC: tl.constexpr,
    HAS_SAMPLE_WEIGHT: tl.constexpr, STORE_PROBS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
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
        row, row_mask, y, weight = load_row_block(rows_ptr, y_ptr, sample_weight_ptr, lanes, B, HAS_SAMPLE_WEIGHT)
        y = y.to(tl.int32)
        if X_CHUNKS > 0 and ONE_CLASS_TILE:
            # The only read of X[rows] in this kernel, kept in X's dtype: steps 2–4 run over it a class at a time.
            x = load_x_block(X_ptr, stride_xn, row, row_mask, 0, D, BLOCK_D)
            loss_total += _resident_row_block(x, y, weight, lanes, row_mask, theta_ptr, grad_ptr, probs_ptr, D, C,
                                              x_scale, grad_scale, visit, BLOCK_D, BLOCK_C, DETERMINISTIC,
                                              STORE_PROBS)
        else:
            if X_CHUNKS > 0:
                # The only read of X[rows] in this kernel, before both class loops: its chunks serve the forward and
                # the backward GEMMs of every class tile (held in shared memory by the compiler; see the constants).
                x = _load_x_chunks(X_ptr, stride_xn, row, row_mask, D, BLOCK_D, X_CHUNKS)
            else:
                x = 0.0  # unused: _logits_tile / _backward_tile stream X in chunks

            # 2. Logits, row max m_i and s_i = Σ_c exp(z_ic − m_i) (lse_i = m_i + log s_i): an online sweep over the
            #    class tiles (a single tile when C fits one).
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
                               X_CHUNKS, DETERMINISTIC, STORE_PROBS, INPUT_PRECISION)
            else:
                for c0 in range(0, C, BLOCK_C):
                    z = _logits_tile(x, X_ptr, stride_xn, row, row_mask, theta_ptr, c0, D, C, x_scale,
                                     BLOCK_B, BLOCK_D, BLOCK_C, X_CHUNKS, INPUT_PRECISION)
                    _backward_tile(x, X_ptr, stride_xn, row, row_mask, y, weight, m, inv_s, z, lanes, grad_ptr,
                                   probs_ptr, c0, B, D, C, x_scale, grad_scale, visit, BLOCK_B, BLOCK_D, BLOCK_C,
                                   X_CHUNKS, DETERMINISTIC, STORE_PROBS, INPUT_PRECISION)
    # 5. This program's summed loss: one atomic (fast) or its own slot (deterministic).
    add_loss(loss_ptr, pid, loss_total, DETERMINISTIC)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher: check, allocate nothing per step (buffers belong to the caller), launch
# ---------------------------------------------------------------------------------------------------------------------


def launch_softmax_sgd(X, rows, y, theta, grad, loss, *, n_classes, x_scale, grad_scale, config,
                       max_programs=None, deterministic=False, input_precision="ieee", sample_weight=None,
                       probs=None):
    """Launch :func:`softmax_sgd_kernel` on the minibatch ``rows`` and return the number of programs ``P``.

    ``grad`` is the (D·C + C,) atomic accumulator, or in deterministic mode a (P_max, D·C + C) partial buffer with
    ``P_max >= P``; ``loss`` is a (1,) float64 accumulator, or (P_max,) float32 partials. Only shapes are checked: no
    device value is read, so the launch never synchronises.
    """
    n_rows, n_features = X.shape
    n_params = n_features * n_classes + n_classes
    if X.stride(1) != 1:
        raise ValueError("X must have contiguous rows (X.stride(1) == 1)")
    if theta.dtype != torch.float32 or theta.numel() != n_params:
        raise ValueError(f"theta must be float32 with D*C + C = {n_params} values")
    if grad.shape[-1] != n_params and grad.numel() != n_params:
        raise ValueError(f"grad must hold D*C + C = {n_params} values per slice")
    if config.x_chunks and not (config.x_chunks - 1) * config.block_d < n_features <= config.x_chunks * config.block_d:
        raise ValueError(f"config holds X in {config.x_chunks} chunks of {config.block_d} features, X has {n_features}")
    if n_params * max(1, grad.numel() // n_params) >= 2**31:
        raise ValueError("parameter buffers beyond 2^31 values are not supported")
    batch = rows.shape[0]
    n_blocks = triton.cdiv(batch, config.block_b)
    n_programs = n_blocks if max_programs is None else max(1, min(max_programs, n_blocks))
    if deterministic and grad.numel() < n_programs * n_params:
        raise ValueError("the partial buffer has fewer slices than programs")
    softmax_sgd_kernel[(n_programs,)](
        X, X.stride(0), rows, y, sample_weight if sample_weight is not None else theta,
        theta, grad, loss, probs if probs is not None else theta,
        batch, n_features, n_classes, float(x_scale), float(grad_scale), triton.cdiv(n_blocks, n_programs),
        **config.constexprs, DETERMINISTIC=deterministic,
        HAS_SAMPLE_WEIGHT=sample_weight is not None, STORE_PROBS=probs is not None,
        INPUT_PRECISION=input_precision, num_warps=config.num_warps, num_stages=config.num_stages,
        maxnreg=config.register_cap(input_precision),
    )
    return n_programs


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: the checkable core (no update), same kernel over all N rows
# ---------------------------------------------------------------------------------------------------------------------


def softmax_loss_grad(X, y, theta, n_classes, *, x_scale=1.0, deterministic=False, input_precision="ieee",
                      sample_weight=None, return_probs=False):
    """Mean cross-entropy over all rows of ``X`` and its gradient, through :func:`softmax_sgd_kernel`.

    Returns ``(loss_sum, grad, probs)``: the fp64 (1,) summed loss, the flat (D·C + C,) mean gradient
    ``[dW row-major, db]`` and the (N, C) probabilities (``None`` unless ``return_probs``).
    """
    from .sgd_update import launch_sgd_update, max_partials

    n_rows, n_features = X.shape
    n_params = n_features * n_classes + n_classes
    config = softmax_config(n_features, n_classes, deterministic)
    rows = torch.arange(n_rows, device=X.device)
    probs = torch.empty((n_rows, n_classes), dtype=torch.float32, device=X.device) if return_probs else None
    loss_sum = torch.zeros(1, dtype=torch.float64, device=X.device)
    n_blocks = triton.cdiv(n_rows, config.block_b)
    if deterministic:
        n_programs = max_partials(n_params, n_blocks)
        partials = torch.empty((n_programs, n_params), dtype=torch.float32, device=X.device)
        loss_partials = torch.empty(n_programs, dtype=torch.float32, device=X.device)
        n_programs = launch_softmax_sgd(X, rows, y, theta, partials, loss_partials, n_classes=n_classes,
                                        x_scale=x_scale, grad_scale=1.0 / n_rows, config=config,
                                        max_programs=n_programs, deterministic=True, input_precision=input_precision,
                                        sample_weight=sample_weight, probs=probs)
        grad = torch.empty(n_params, dtype=torch.float32, device=X.device)
        launch_sgd_update(theta, partials, n_weights=n_features * n_classes, deterministic=True,
                          n_partials=n_programs, loss_partials=loss_partials, loss_sum=loss_sum, grad_out=grad)
    else:
        grad = torch.zeros(n_params, dtype=torch.float32, device=X.device)
        launch_softmax_sgd(X, rows, y, theta, grad, loss_sum, n_classes=n_classes, x_scale=x_scale,
                           grad_scale=1.0 / n_rows, config=config, input_precision=input_precision,
                           sample_weight=sample_weight, probs=probs)
    return loss_sum, grad, probs
