"""The softmax-regression step on a 2-D grid of (class groups × row splits): dW as a GEMM accumulated on chip and
flushed once per step, for large batches and many classes.

For the minibatch rows ``r`` the math is :mod:`softmax_sgd`'s::

    Z  = s·X[r] W + b,   CE_i = lse(Z_i) − Z_{i,y_i},   dZ = w_i (softmax(Z) − onehot(y)) / B
    dW = s·X[r]ᵀ dZ,     db = Σ_i dZ_i,                 loss = Σ_i w_i CE_i

:mod:`softmax_sgd` runs one program per 16-row block, each adding its whole gradient into θ-sized memory (D·C + C
atomics per row block) and each reading all of W (twice past one class tile). Here program ``(g, r)`` owns class
group ``g`` (``tiles_per_group`` class tiles of ``BLOCK_C`` classes) and row split ``r`` (a contiguous range of
``blocks_per_split`` row blocks). For each of its class tiles it loads the (D, BLOCK_C) tile of W once, sweeps its row
blocks accumulating ``dW_tile += (s·X_rows)ᵀ dZ`` by tl.dot and ``db_tile`` in registers, and flushes them once:

- fast mode: one atomic add per accumulated value, ``n_row_splits · (D·C + C)`` atomics per step (plus one fp64
  loss atomic per row split) however large B is;
- deterministic mode: a store into this row split's slice of a (n_row_splits, D·C + C) partial buffer, summed in a
  fixed order by ``sgd_update`` (bitwise reproducible run to run). ``n_row_splits`` is capped by
  ``sgd_update.max_partials``, so the partials beyond one θ-sized slice stay under ``sgd_update.PARTIALS_BYTES``;
  at large C the class groups alone give the parallelism.

Past one class tile a row's log-sum-exp spans programs, so the step takes two launches before the gradient one:

1. :func:`softmax_tiled_lse_kernel`, the same grid: program (g, r) folds its class tiles into per-(row, group)
   partials ``(m, s, z_y)`` (row max, Σ exp(z − m), the target logit if group g holds it);
2. :func:`softmax_tiled_merge_kernel`, over row blocks: merges each row's ``n_class_groups`` partials in a fixed
   order into ``(m, 1/s, w_i·CE_i)``.

Their buffer is the (n_class_groups + 1, 3, B) fp32 ``lse`` (:func:`lse_buffer_shape`): ``12·B·(n_class_groups + 1)``
bytes, O(B · n_class_tiles) at most; the B × C logits are never stored. With one class tile (C ≤ BLOCK_C) the gradient
kernel computes the log-sum-exp itself: one launch (plus the update).

W's class tile and the dW accumulator are held on chip across the row-block loop as (BLOCK_D, 16) feature chunks
(D ≤ :data:`TILED_D_MAX`; dW in registers, W's tile where the compiler stages tl.dot's operand, shared memory);
``X[rows]`` is read in the same chunks for the logits and again (from L1/L2) for dW, since holding it too would not
fit beside them. The logits are exact fp32 products (FMA): with 16-row blocks a tensor-core layout would replicate
W's operand fragments across the warps and spill. The dW GEMM, (D chunk × 16 rows) · (16 rows × 16 classes), fills
the mma tiles: ``dw_precision`` ``"tf32x3"`` runs it on tensor cores with fp32-grade products (X is exact in tf32
when uint8, fp16 or bf16, so only dZ's split matters; the backend's default from sm_90), ``"tf32"`` with 10-bit
products (the backend's ``tf32`` option), ``"ieee"`` (this module's default, and older GPUs') by FMA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._launch import loss_grad_over_rows, step_grid
from ._tiles import (
    LAUNCH_OPTIONS,
    accumulate,
    add_loss,
    load_row_block,
    load_rows,
    load_x_tile,
    online_logsumexp,
    param_tile,
    row_block_lanes,
    softmax_dz,
)
from .sgd_update import max_partials

# ---------------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------------

# Minibatch rows per block: tl.dot's minimum M (forward) and K (dW's GEMM).
BLOCK_B = 16
# Classes per tile: tl.dot's minimum N. The W tile and the dW accumulator are cdiv(D, BLOCK_D) (BLOCK_D, BLOCK_C)
# chunks each, held on chip across the row-block loop (800 features held at D = 784, not 1024).
BLOCK_C = 16
BLOCK_D = 32
# Tensor-core dW: mma accumulators are 16 × 8 per warp, so (64, 16) chunks spread over the 8 warps without replication.
MMA_BLOCK_D = 64
DW_PRECISIONS = ("ieee", "tf32x3", "tf32")
# The tensor-core dW builds are spill-free from sm_90 (Hopper); older GPUs take the FMA dW.
MMA_MIN_CAPABILITY = (9, 0)
# Up to 1024 features (32 chunks); wider X takes softmax_sgd's streamed path.
TILED_D_MAX = 1024
NUM_WARPS = 8
NUM_STAGES = 1
# Programs per step the grid aims at: 2 per SM of an H100/H200 (132 SMs), enough to hide one program's latency
# chain behind another's. A launcher argument: other GPUs pass 2 × their SM count.
TARGET_PROGRAMS = 2 * 132
# Where the backend takes this step on a GPU: past 64 classes (softmax_sgd's one-class-tile limit, beyond which each of
# its programs reads W twice), or from 4096 rows (256 row blocks, about the grid: below, softmax_sgd's one program per
# row block is as parallel and its atomics per step are no more than 2 × SMs row blocks' worth).
TILED_MIN_CLASSES = 65
TILED_MIN_BATCH = 4096
# Rows per program of the merge launch (elementwise over rows: 1 row per thread at 4 warps).
MERGE_BLOCK = 128
MERGE_NUM_WARPS = 4
# No ptxas register cap (.maxnreg): left to itself ptxas sizes registers for occupancy and keeps W's tile in shared
# memory; a cap of 255 lets it over-schedule the unrolled chunk GEMMs and spill.
# Runtime arguments that are not int32 or fp32 buffers, typed for the compile report (which sets X's and loss's).
ARG_TYPES = {"rows_ptr": "*i64", "y_ptr": "*i64", "x_scale": "fp32", "grad_scale": "fp32"}


@dataclass(frozen=True)
class TiledConfig:
    """Compile-time tile shape of the tiled kernels for one (D, C): W, dW and X in ``d_chunks`` feature chunks of
    ``block_d`` (only the last may pass D); ``dw_precision`` is the dW GEMM's ``input_precision``."""

    block_b: int
    block_d: int
    block_c: int
    d_chunks: int
    one_class_tile: bool
    dw_precision: str = "ieee"
    num_warps: int = NUM_WARPS
    num_stages: int = NUM_STAGES

    @property
    def constexprs(self) -> dict:
        """The gradient and log-sum-exp kernels' tile-shape constexprs."""
        return {"BLOCK_B": self.block_b, "BLOCK_D": self.block_d, "BLOCK_C": self.block_c, "D_CHUNKS": self.d_chunks}

    @property
    def label(self) -> str:
        tiles = "1 class tile" if self.one_class_tile else "class tiles, lse partials"
        return (f"tiled B{self.block_b} D{self.block_d}x{self.d_chunks} C{self.block_c} {tiles}, dW "
                f"{self.dw_precision}, {self.num_warps} warps")


@dataclass(frozen=True)
class TiledLayout:
    """How one step's work is spread over the 2-D grid (host integers only, nothing read from the device).

    ``n_class_groups × n_row_splits`` programs; group g holds class tiles ``g·tiles_per_group …`` and row split r
    the row blocks ``r·blocks_per_split …`` (the last group or split may hold fewer, even none).
    """

    n_class_tiles: int
    tiles_per_group: int
    n_class_groups: int
    n_row_blocks: int
    blocks_per_split: int
    n_row_splits: int
    n_params: int

    @property
    def grid(self) -> tuple[int, int]:
        return (self.n_class_groups, self.n_row_splits)

    @property
    def programs(self) -> int:
        return self.n_class_groups * self.n_row_splits

    @property
    def atomics_per_step(self) -> int:
        """Fast mode: each row split adds each of D·C + C values once, and its summed loss once."""
        return self.n_row_splits * (self.n_params + 1)

    @property
    def partial_bytes(self) -> int:
        """Deterministic mode: the (n_row_splits, D·C + C) fp32 partial slices."""
        return 4 * self.n_row_splits * self.n_params


def tiled_step_pays(batch: int, n_classes: int) -> bool:
    """Whether a step of ``batch`` rows and ``n_classes`` classes is worth this kernel over :mod:`softmax_sgd`'s."""
    return n_classes >= TILED_MIN_CLASSES or batch >= TILED_MIN_BATCH


def tiled_config(n_features: int, n_classes: int, dw_precision: str = "ieee") -> TiledConfig | None:
    """The tile shape for ``D = n_features``, ``C = n_classes`` and the dW GEMM's precision (one of
    :data:`DW_PRECISIONS`); None past :data:`TILED_D_MAX` features."""
    if dw_precision not in DW_PRECISIONS:
        raise ValueError(f"dw_precision must be one of {DW_PRECISIONS}, got {dw_precision!r}")
    if n_features > TILED_D_MAX:
        return None
    block_d = BLOCK_D if dw_precision == "ieee" else MMA_BLOCK_D
    return TiledConfig(block_b=BLOCK_B, block_d=block_d, block_c=BLOCK_C, d_chunks=triton.cdiv(n_features, block_d),
                       one_class_tile=n_classes <= BLOCK_C, dw_precision=dw_precision)


def tiled_layout(batch: int, n_features: int, n_classes: int, *, target_programs: int = TARGET_PROGRAMS,
                 deterministic: bool = False, max_row_splits: int | None = None) -> TiledLayout:
    """The grid of one step over ``batch`` rows: class groups first (they need no reduction), then row splits up to
    ``target_programs`` in all; deterministic splits are capped by ``sgd_update.max_partials`` (the partial buffer's
    bound), and by ``max_row_splits`` when the caller's buffer holds fewer slices."""
    n_params = n_features * n_classes + n_classes
    n_tiles = triton.cdiv(n_classes, BLOCK_C)
    tiles_per_group = triton.cdiv(n_tiles, max(1, min(n_tiles, target_programs)))
    n_groups = triton.cdiv(n_tiles, tiles_per_group)
    n_blocks = triton.cdiv(batch, BLOCK_B)
    splits = max(1, min(n_blocks, target_programs // n_groups))
    if deterministic:
        splits = min(splits, max_partials(n_params, n_blocks))
    if max_row_splits is not None:
        splits = max(1, min(splits, max_row_splits))
    blocks_per_split = triton.cdiv(n_blocks, splits)
    return TiledLayout(n_class_tiles=n_tiles, tiles_per_group=tiles_per_group, n_class_groups=n_groups,
                       n_row_blocks=n_blocks, blocks_per_split=blocks_per_split,
                       n_row_splits=triton.cdiv(n_blocks, blocks_per_split), n_params=n_params)


def lse_buffer_shape(batch: int, n_classes: int, target_programs: int = TARGET_PROGRAMS) -> tuple[int, int, int]:
    """Shape of the fp32 log-sum-exp buffer a step over ``batch`` rows needs: ``(G + 1, 3, batch)`` with G class groups
    (slot g < G: group g's partial ``(m, s, z_y)`` per row; slot G: the merged ``(m, 1/s, w·CE)``)."""
    n_tiles = triton.cdiv(n_classes, BLOCK_C)
    n_groups = triton.cdiv(n_tiles, triton.cdiv(n_tiles, max(1, min(n_tiles, target_programs))))
    return (n_groups + 1, 3, batch)


# ---------------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _class_tile(theta_ptr, c0, D, C, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, D_CHUNKS: tl.constexpr):
    """``W[:, c0 : c0 + BLOCK_C]`` as a tuple of ``D_CHUNKS`` (BLOCK_D, BLOCK_C) chunks (padded features and classes
    0) and ``b[c0 : …]``: the program's one read of them for all its row blocks."""
    w = ()
    for k in tl.static_range(D_CHUNKS):
        w_ptrs, w_mask = param_tile(theta_ptr, k * BLOCK_D, c0, D, C, BLOCK_D, BLOCK_C, k == D_CHUNKS - 1)
        w = w + (tl.load(w_ptrs, mask=w_mask, other=0.0),)
    cols = c0 + tl.arange(0, BLOCK_C)
    return w, tl.load(theta_ptr + D * C + cols, mask=cols < C, other=0.0)


@triton.jit
def _tile_logits(X_ptr, stride_xn, row, row_mask, w, bias, c0, D, C, x_scale, BLOCK_B: tl.constexpr,
                 BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, D_CHUNKS: tl.constexpr):
    """Logits of one (row block, class tile): ``s·(X W) + b`` over X's feature chunks, padded classes −inf."""
    xw = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(D_CHUNKS):
        xw = tl.dot(load_x_tile(X_ptr, stride_xn, row, row_mask, k * BLOCK_D, D, BLOCK_D), w[k], xw,
                    input_precision="ieee")
    cols = c0 + tl.arange(0, BLOCK_C)
    # (s·X) W = s·(X W): the scale multiplies the (B, C) tile, not the (B, D) one.
    z = xw * x_scale + bias[None, :]
    return tl.where((cols < C)[None, :], z, float("-inf"))


@triton.jit
def _program_work(B, C, tiles_per_group, blocks_per_split, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's share of the grid: ``(group, split, first_block, end_block, first_tile, end_tile)``, its row
    split's row blocks ``[first_block, end_block)`` (empty past the last block) and its class group's class tiles."""
    group = tl.program_id(0)
    split = tl.program_id(1)
    first_block = split * blocks_per_split
    first_tile = group * tiles_per_group
    return (group, split, first_block, tl.minimum(first_block + blocks_per_split, tl.cdiv(B, BLOCK_B)), first_tile,
            tl.minimum(first_tile + tiles_per_group, tl.cdiv(C, BLOCK_C)))


@triton.jit
def softmax_tiled_lse_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, theta_ptr, lse_ptr,
    B, D, C, x_scale, tiles_per_group, blocks_per_split,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, D_CHUNKS: tl.constexpr,
):
    """Pass 1 past one class tile: per row and class group, ``m = max_c z``, ``s = Σ_c exp(z − m)`` and ``z_y``
    (0 unless the group holds class y) over the group's classes, into ``lse[g, 0:3, row]``."""
    group, split, first_block, end_block, first_tile, end_tile = _program_work(B, C, tiles_per_group,
                                                                               blocks_per_split, BLOCK_B, BLOCK_C)
    partial_ptr = lse_ptr + group * 3 * B
    for tile_visit in range(0, end_tile - first_tile):
        c0 = (first_tile + tile_visit) * BLOCK_C
        w, bias = _class_tile(theta_ptr, c0, D, C, BLOCK_D, BLOCK_C, D_CHUNKS)
        for visit in range(0, end_block - first_block):
            lanes = row_block_lanes(first_block + visit, BLOCK_B)
            row, row_mask, y, _ = load_row_block(rows_ptr, y_ptr, None, lanes, B)
            z = _tile_logits(X_ptr, stride_xn, row, row_mask, w, bias, c0, D, C, x_scale, BLOCK_B, BLOCK_D, BLOCK_C,
                             D_CHUNKS)
            # The group's running (m, s, z_y) of these rows, private to this program: its first tile starts them.
            # The barrier makes the previous tile's stores (possibly by other threads) visible before the loads.
            tl.debug_barrier()
            earlier = row_mask & (tile_visit > 0)
            m = tl.load(partial_ptr + lanes, mask=earlier, other=float("-inf"))
            s = tl.load(partial_ptr + B + lanes, mask=earlier, other=0.0)
            z_target = tl.load(partial_ptr + 2 * B + lanes, mask=earlier, other=0.0)
            m, s, z_target = online_logsumexp(m, s, z_target, z, y.to(tl.int32), c0, BLOCK_C)
            tl.store(partial_ptr + lanes, m, mask=row_mask)
            tl.store(partial_ptr + B + lanes, s, mask=row_mask)
            tl.store(partial_ptr + 2 * B + lanes, z_target, mask=row_mask)


@triton.jit
def softmax_tiled_merge_kernel(rows_ptr, sample_weight_ptr, lse_ptr, B, n_groups, BLOCK: tl.constexpr):
    """Pass 2: each row's ``n_groups`` partials merged in group order (the same order every run) into
    ``lse[n_groups] = (m, 1/s, w·CE)``, with ``CE = (m − z_y) + log s``."""
    lanes = row_block_lanes(tl.program_id(0), BLOCK)
    _, row_mask, weight = load_rows(rows_ptr, sample_weight_ptr, lanes, B)
    m = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK,), dtype=tl.float32)
    z_target = tl.zeros((BLOCK,), dtype=tl.float32)
    for group in range(0, n_groups):
        partial_ptr = lse_ptr + group * 3 * B
        m_group = tl.load(partial_ptr + lanes, mask=row_mask, other=0.0)
        m_new = tl.maximum(m, m_group)
        # s = Σ_g s_g·exp(m_g − m): every exponent ≤ 0; exp(−inf) = 0 clears the empty start.
        s = s * tl.exp(m - m_new) + tl.load(partial_ptr + B + lanes, mask=row_mask, other=1.0) * tl.exp(m_group - m_new)
        z_target += tl.load(partial_ptr + 2 * B + lanes, mask=row_mask, other=0.0)  # one group holds z_y, others 0
        m = m_new
    merged_ptr = lse_ptr + n_groups * 3 * B
    tl.store(merged_ptr + lanes, m, mask=row_mask)
    tl.store(merged_ptr + B + lanes, 1.0 / s, mask=row_mask)
    # The difference first: m and z_y may be 1e4 while CE is small.
    tl.store(merged_ptr + 2 * B + lanes, ((m - z_target) + tl.log(s)) * weight, mask=row_mask)


@triton.jit
def softmax_tiled_grad_kernel(
    X_ptr, stride_xn, rows_ptr, y_ptr, sample_weight_ptr, theta_ptr, grad_ptr, loss_ptr, lse_ptr,
    B, D, C, x_scale, grad_scale, tiles_per_group, blocks_per_split, n_groups,
    BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, D_CHUNKS: tl.constexpr,
    ONE_CLASS_TILE: tl.constexpr, DETERMINISTIC: tl.constexpr, DW_PRECISION: tl.constexpr,
):
    """Loss and gradient of program (class group, row split): dW and db of its class tiles over its row blocks.

    ``grad`` is the (D·C + C,) atomic accumulator (fast) or (n_row_splits, D·C + C) partials (deterministic; this
    program writes its class tiles' columns of slice ``split``); ``loss`` the fp64 running loss or the
    (n_row_splits,) fp32 partials, added to by the group-0 programs. Past one class tile ``lse`` holds the merged
    ``(m, 1/s, w·CE)`` of every row (:func:`softmax_tiled_merge_kernel`).
    """
    group, split, first_block, end_block, first_tile, end_tile = _program_work(B, C, tiles_per_group,
                                                                               blocks_per_split, BLOCK_B, BLOCK_C)
    if DETERMINISTIC:
        grad_ptr += split.to(tl.int64) * (D * C + C)  # this row split's own partial slice
    loss_total = tl.zeros((), dtype=tl.float32)
    for tile_visit in range(0, end_tile - first_tile):
        c0 = (first_tile + tile_visit) * BLOCK_C
        # 1. The class tile of W and b: read once, kept for all the row blocks.
        w, bias = _class_tile(theta_ptr, c0, D, C, BLOCK_D, BLOCK_C, D_CHUNKS)
        dw = ()
        for k in tl.static_range(D_CHUNKS):
            dw = dw + (tl.zeros((BLOCK_D, BLOCK_C), dtype=tl.float32),)
        db = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for visit in range(0, end_block - first_block):
            # 2. The row block: indices, labels, weights (masked lanes weigh 0), and its logits of this tile.
            lanes = row_block_lanes(first_block + visit, BLOCK_B)
            row, row_mask, y, weight = load_row_block(rows_ptr, y_ptr, sample_weight_ptr, lanes, B)
            y = y.to(tl.int32)
            z = _tile_logits(X_ptr, stride_xn, row, row_mask, w, bias, c0, D, C, x_scale, BLOCK_B, BLOCK_D, BLOCK_C,
                             D_CHUNKS)
            # 3. The rows' log-sum-exp: from this tile alone, or merged across the class groups by passes 1–2.
            if ONE_CLASS_TILE:
                m, s, z_target = online_logsumexp(tl.full((BLOCK_B,), float("-inf"), dtype=tl.float32),
                                                  tl.zeros((BLOCK_B,), dtype=tl.float32),
                                                  tl.zeros((BLOCK_B,), dtype=tl.float32), z, y, c0, BLOCK_C)
                inv_s = 1.0 / s
                # CE_i = (m_i − z_{i,y_i}) + log s_i, weighted; the difference first (m and z_y may be 1e4).
                loss_total += tl.sum(((m - z_target) + tl.log(s)) * weight, axis=0)
            else:
                merged_ptr = lse_ptr + n_groups * 3 * B  # lse is None (a constexpr) with one class tile
                m = tl.load(merged_ptr + lanes, mask=row_mask, other=0.0)
                inv_s = tl.load(merged_ptr + B + lanes, mask=row_mask, other=0.0)
                if (group == 0) & (tile_visit == 0):  # each row's loss once, by its split's first program
                    loss_total += tl.sum(tl.load(merged_ptr + 2 * B + lanes, mask=row_mask, other=0.0), axis=0)
            # 4. dZ = w_i (P − onehot)/B, then the GEMM dW_tile += (s·X)ᵀ dZ = Xᵀ (s·dZ) and db_tile += Σ_i dZ_i.
            #    X's chunks are read again (from L1/L2): holding them too would not fit beside W and dW.
            _, dz = softmax_dz(z, y, m, inv_s, weight * grad_scale, c0, BLOCK_C)
            dz_scaled = dz * x_scale
            dw_next = ()
            for k in tl.static_range(D_CHUNKS):
                x_k = load_x_tile(X_ptr, stride_xn, row, row_mask, k * BLOCK_D, D, BLOCK_D)
                dw_next = dw_next + (tl.dot(tl.trans(x_k), dz_scaled, dw[k], input_precision=DW_PRECISION),)
            dw = dw_next
            db += tl.sum(dz, axis=0)
        # 5. Flush the tile once: atomics (fast) or a store into this split's slice (deterministic; visit 0 stores).
        for k in tl.static_range(D_CHUNKS):
            g_ptrs, g_mask = param_tile(grad_ptr, k * BLOCK_D, c0, D, C, BLOCK_D, BLOCK_C, k == D_CHUNKS - 1)
            accumulate(g_ptrs, dw[k], g_mask, 0, DETERMINISTIC)
        cols = c0 + tl.arange(0, BLOCK_C)
        accumulate(grad_ptr + D * C + cols, db, cols < C, 0, DETERMINISTIC)
    # 6. The row split's summed loss, from its group-0 program: one atomic (fast) or its own slot (deterministic).
    if group == 0:
        add_loss(loss_ptr, split, loss_total, DETERMINISTIC)


# ---------------------------------------------------------------------------------------------------------------------
# Launcher: check, allocate nothing per step (buffers belong to the caller), launch
# ---------------------------------------------------------------------------------------------------------------------


def softmax_tiled_launches(X, rows, y, theta, grad, loss, lse, *, n_classes, x_scale, grad_scale, config,
                           target_programs=TARGET_PROGRAMS, max_programs=None, deterministic=False,
                           sample_weight=None):
    """The launches of one step, checked, not launched: ``(layout, [(kernel, grid, arguments), …])``.

    Buffers as :func:`softmax_sgd.softmax_sgd_arguments`'s (``grad`` the (D·C + C,) accumulator or (P_max, D·C + C)
    partials, ``loss`` the (1,) fp64 loss or (P_max,) fp32 partials; ``max_programs`` caps the row splits at the
    slices the caller allocated), plus ``lse``, a float32 buffer of :func:`lse_buffer_shape` (unused, may be None,
    with one class tile). One launch with one class tile, three past it; no device value is read.
    """
    batch, n_features = rows.shape[0], X.shape[1]
    if config != tiled_config(n_features, n_classes, config.dw_precision):
        raise ValueError(f"config {config.label} does not fit D={n_features}, C={n_classes}")
    layout = tiled_layout(batch, n_features, n_classes, target_programs=target_programs, deterministic=deterministic,
                          max_row_splits=max_programs)
    # The buffer checks of every step kernel (the row splits are the programs that own partial slices).
    step_grid(X, rows, theta, grad, n_outputs=n_classes, outputs_name="C", block_b=config.block_b,
              max_programs=layout.n_row_splits, deterministic=deterministic)
    if not config.one_class_tile and (lse is None or lse.dtype != torch.float32
                                      or tuple(lse.shape) != lse_buffer_shape(batch, n_classes, target_programs)):
        raise ValueError(f"lse must be float32 of shape {lse_buffer_shape(batch, n_classes, target_programs)}")
    common = dict(X_ptr=X, stride_xn=X.stride(0), rows_ptr=rows, y_ptr=y, theta_ptr=theta, B=batch, D=n_features,
                  C=n_classes, x_scale=float(x_scale), tiles_per_group=layout.tiles_per_group,
                  blocks_per_split=layout.blocks_per_split, **config.constexprs,
                  num_warps=config.num_warps, num_stages=config.num_stages, **LAUNCH_OPTIONS)
    launches = []
    if not config.one_class_tile:
        launches.append((softmax_tiled_lse_kernel, layout.grid, dict(common, lse_ptr=lse)))
        launches.append((softmax_tiled_merge_kernel, (triton.cdiv(batch, MERGE_BLOCK),), dict(
            rows_ptr=rows, sample_weight_ptr=sample_weight, lse_ptr=lse, B=batch, n_groups=layout.n_class_groups,
            BLOCK=MERGE_BLOCK, num_warps=MERGE_NUM_WARPS, **LAUNCH_OPTIONS)))
    launches.append((softmax_tiled_grad_kernel, layout.grid, dict(
        common, sample_weight_ptr=sample_weight, grad_ptr=grad, loss_ptr=loss, lse_ptr=lse,
        grad_scale=float(grad_scale), n_groups=layout.n_class_groups, ONE_CLASS_TILE=config.one_class_tile,
        DETERMINISTIC=deterministic, DW_PRECISION=config.dw_precision)))
    return layout, launches


def launch_softmax_tiled_sgd(*args, **kwargs) -> int:
    """Launch :func:`softmax_tiled_launches` (same parameters) in order; return the row splits (partial slices)."""
    layout, launches = softmax_tiled_launches(*args, **kwargs)
    for kernel, grid, arguments in launches:
        kernel[grid](**arguments)
    return layout.n_row_splits


# ---------------------------------------------------------------------------------------------------------------------
# Wrapper: the checkable core (no update), same kernels over all N rows
# ---------------------------------------------------------------------------------------------------------------------


def softmax_tiled_loss_grad(X, y, theta, n_classes, *, x_scale=1.0, deterministic=False, sample_weight=None,
                            dw_precision="ieee", target_programs=TARGET_PROGRAMS):
    """Summed cross-entropy over all rows of ``X`` and its mean gradient, through the tiled kernels.

    Returns ``(loss_sum, grad)``: the fp64 (1,) summed loss and the flat (D·C + C,) gradient ``[dW row-major, db]``.
    """
    n_rows, n_features = X.shape
    config = tiled_config(n_features, n_classes, dw_precision)
    if config is None:
        raise ValueError(f"the tiled kernels hold at most {TILED_D_MAX} features, X has {n_features}")
    lse = (None if config.one_class_tile else
           torch.empty(lse_buffer_shape(n_rows, n_classes, target_programs), dtype=torch.float32, device=X.device))

    def launch_step(rows, grad, loss, **mode):
        return launch_softmax_tiled_sgd(X, rows, y, theta, grad, loss, lse, n_classes=n_classes, x_scale=x_scale,
                                        grad_scale=1.0 / n_rows, config=config, target_programs=target_programs,
                                        sample_weight=sample_weight, **mode)

    return loss_grad_over_rows(launch_step, X, theta, n_outputs=n_classes, block_b=config.block_b,
                               deterministic=deterministic)
