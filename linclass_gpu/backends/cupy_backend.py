"""The CUDA backend on CuPy: :class:`~.array_backend.ArrayBackend` over ``cupy`` with the two seams fused.

Everything but two steps is the array-generic code the NumPy backend runs (and its tests exercise): the row gather,
both GEMMs (``cupy.matmul`` calls cuBLAS), ``db = Σ dZ``, the buffers and the loss accumulator. The two steps that
would otherwise be a chain of small CuPy kernels are one CUDA kernel each, from ``cuda_rowwise.cu``:

- :meth:`CupyBackend.logits_to_grad_`: scale, bias, softmax or the ``K`` sigmoids (binary cross-entropy or squared
  error), loss and ``dZ`` in one pass over the logits, each row weighted by its sample weight when there are any (a
  null pointer otherwise);
- :meth:`CupyBackend.sgd_update_`: L2, momentum, AdaGrad or Adam, the parameter update and L1's soft-thresholding in one
  pass over the parameters.

One training step is then about ten launches (gathers, two GEMMs, the row-wise kernel, ``db``, two updates) and no
host sync: the loss stays in a device float64 scalar that the training loop reads once per epoch. cuBLAS runs in full
fp32 (CuPy uses TF32 only when ``CUPY_TF32=1``).
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import numpy as np

from .array_backend import ArrayBackend
from .base import ADAGRAD_EPS, ADAM_BETAS, ADAM_EPS, adam_bias_corrections

KERNEL_SOURCE = importlib.resources.files(__package__).joinpath("cuda_rowwise.cu").read_text(encoding="utf-8")
WARP_SIZE = 32
# Softmax rows: one warp per row, four warps (128 threads) per block.
ROWS_PER_BLOCK = 4
# Sigmoid logits and parameter updates: one thread per value.
THREADS_PER_BLOCK = 256
# sigmoid_loss_elements' loss_kind for each sigmoid model (BINARY_CROSS_ENTROPY and SQUARED_ERROR in the kernel).
SIGMOID_LOSS_KINDS = {"sigmoid": 0, "sigmoid_mse": 1}
# A warp keeps a row of up to 32·32 = 1024 logits in registers (float64: 128 registers from nvcc 13.0 and NVRTC 12.9,
# no spills on sm_80/sm_90); wider rows take the array-generic path.
MAX_VALUES_PER_LANE = 32
REAL_TYPES = {"float32": "float", "float64": "double"}
# A null pointer argument (the kernels' "no sample weights"): a 64-bit zero. CuPy passes None as 0xffffffff, not 0
# (cupy/cupy#9046).
NULL_POINTER = np.uintp(0)


def values_per_lane(n_classes: int) -> int | None:
    """Logits each lane of a warp holds for a row of ``n_classes``: a power of two (few compiled variants), or None
    when the row is wider than :data:`MAX_VALUES_PER_LANE` · 32."""
    needed = -(-n_classes // WARP_SIZE)  # ceil(C / 32)
    values = 1 << (needed - 1).bit_length()  # next power of two >= needed
    return values if values <= MAX_VALUES_PER_LANE else None


def compile_options(dtype: Any, values_per_lane: int) -> tuple[str, ...]:
    """The ``-D`` options that specialise ``cuda_rowwise.cu`` (the same for NVRTC at run time and nvcc in tests)."""
    return (f"-DLINCLASS_REAL={REAL_TYPES[np.dtype(dtype).name]}", f"-DLINCLASS_VALUES_PER_LANE={values_per_lane}")


@functools.cache
def _kernel(dtype_name: str, values_per_lane: int, name: str):
    """The compiled kernel ``name`` (CuPy caches the binary on disk too, so a process compiles at most once).

    Only the softmax kernel reads ``values_per_lane``; the others are taken from the build with 1.
    """
    import cupy

    module = cupy.RawModule(code=KERNEL_SOURCE, options=compile_options(dtype_name, values_per_lane))
    return module.get_function(name)


def _blocks(n_items: int, per_block: int) -> tuple[int]:
    """The grid: enough blocks of ``per_block`` items to cover ``n_items``."""
    return (-(-n_items // per_block),)


class CupyBackend(ArrayBackend):
    """CuPy on the current CUDA device (float32 or float64); ``auto`` picks it when Triton cannot run on a GPU."""

    name = "cupy"

    def __init__(self, deterministic: bool = False):
        """``deterministic`` is accepted for the estimators' sake: cuBLAS GEMMs and the row-wise kernel add in a
        fixed order, so every run is already bitwise repeatable."""
        import cupy

        self.xp = cupy

    def permutation(self, n: int, rng: np.random.Generator) -> Any:
        """Shuffled on the device (cuRAND) from a seed drawn from ``rng``: nothing the size of ``n`` crosses the bus."""
        return self.xp.random.RandomState(int(rng.integers(2**32))).permutation(n)  # RandomState seeds are 32-bit

    def describe(self) -> str:
        cupy = self.xp
        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"].decode()
        return f"cupy (CUDA device {device.id}: {name}, CuPy {cupy.__version__})"

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def fused_sgd(self, model, X, y, W, b, **options):
        if model == "softmax":
            y = y.astype(np.int64, copy=False)  # the kernel reads flat target indices as 64-bit integers
        return super().fused_sgd(model, X, y, W, b, **options)

    def logits_to_grad_(self, model, Z, targets, weights, b, x_scale, loss_sum, db, dz_scale=1.0):
        """One launch of a row-wise kernel: ``sigmoid_loss_elements`` (one thread per logit) for both sigmoid models
        and any ``K``, ``softmax_cross_entropy_rows`` (one warp per row) for softmax rows of up to 1024 classes; wider
        softmax rows take the array-generic path."""
        n_rows, n_outputs = Z.shape
        values = 1 if model in SIGMOID_LOSS_KINDS else values_per_lane(n_outputs)
        if values is None:
            super().logits_to_grad_(model, Z, targets, weights, b, x_scale, loss_sum, db, dz_scale)
            return
        # The kernels read C-contiguous arrays: flat target indices as 64-bit integers (softmax) or targets in Z's
        # dtype. Z and the weights are C-contiguous already (our buffer; asarray's order="C"); targets and bias may be
        # a caller's views (a Fortran-ordered target matrix, a strided bias), copied only then.
        xp, real = self.xp, Z.dtype.type
        targets = xp.ascontiguousarray(targets, dtype=np.int64 if model == "softmax" else Z.dtype)
        weights = NULL_POINTER if weights is None else weights
        arrays = (Z, targets, weights, xp.ascontiguousarray(b), loss_sum)
        scale_and_mean = (real(x_scale), real(1.0 / n_rows))
        if model in SIGMOID_LOSS_KINDS:
            kernel = _kernel(Z.dtype.name, values, "sigmoid_loss_elements")
            kernel(_blocks(Z.size, THREADS_PER_BLOCK), (THREADS_PER_BLOCK,),
                   arrays + (np.int32(n_rows), np.int32(n_outputs), np.int32(SIGMOID_LOSS_KINDS[model]))
                   + scale_and_mean)
        else:
            kernel = _kernel(Z.dtype.name, values, "softmax_cross_entropy_rows")
            kernel(_blocks(n_rows, ROWS_PER_BLOCK), (ROWS_PER_BLOCK * WARP_SIZE,),
                   arrays + (np.int32(n_rows), np.int32(n_outputs)) + scale_and_mean)
        Z.sum(axis=0, out=db)
        if dz_scale != 1.0:
            Z *= dz_scale

    def sgd_update_(self, param, grad, velocity, scratch, learning_rate, l2, momentum, nesterov, l1=0.0,
                    accumulator=None, adam_step=0):
        """One launch of the update kernel; ``scratch`` is not needed."""
        real = param.dtype.type
        kernel = _kernel(param.dtype.name, 1, "sgd_update")
        # Plain SGD has no velocity buffer: the kernel then reads and writes grad in its place (μ = 0 gives v = g).
        velocity = grad if velocity is None else velocity
        optimizer = 2 if adam_step else 0 if accumulator is None else 1  # Adam, SGD or AdaGrad
        accumulator = NULL_POINTER if accumulator is None else accumulator
        eps = ADAM_EPS if adam_step else ADAGRAD_EPS
        adam = ADAM_BETAS + (adam_bias_corrections(adam_step) if adam_step else (1.0, 1.0))
        kernel(_blocks(param.size, THREADS_PER_BLOCK), (THREADS_PER_BLOCK,),
               (param, grad, velocity, accumulator, np.int32(param.size), real(learning_rate), real(l2), real(l1),
                real(momentum), np.int32(nesterov), np.int32(optimizer), real(eps), *(real(value) for value in adam)))
