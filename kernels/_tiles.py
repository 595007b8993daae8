"""Device helpers shared by the softmax and the sigmoid SGD kernels.

Both kernels walk the same minibatch the same way: a program takes blocks of ``BLOCK_B`` minibatch rows, gathers
their row indices, labels and weights, loads tiles of ``X[rows]`` and adds its share of the gradient into a buffer,
by atomics (fast) or into its own partial slice (deterministic). Only the loss and its derivative differ, and those
stay in the kernel files. Their tl.dot paths also share one choice of tile shape (:func:`dot_tile_shape`).
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
def accumulate(ptrs, value, mask, visit, DETERMINISTIC: tl.constexpr):
    """Add ``value`` into the gradient buffer at ``ptrs``.

    Fast mode: float atomics into one shared buffer; the order of the additions, hence the rounding, varies run to
    run. Deterministic mode: ``ptrs`` point into this program's own partial slice, which no other program touches, so
    a plain read-add-write is race free; visit 0 (the program's first row block) overwrites, so no memset launch
    is needed, later visits add. The
    slices are summed in a fixed order by the update kernel.
    """
    if DETERMINISTIC:
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
