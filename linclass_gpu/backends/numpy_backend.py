"""The CPU backend: :class:`~.array_backend.ArrayBackend` over NumPy, always available."""

from __future__ import annotations

from typing import Any, ContextManager

import numpy as np

from ..arrays import to_numpy
from ..threads import blas_thread_limit, blas_threads_for
from .array_backend import ArrayBackend


class NumpyBackend(ArrayBackend):
    """NumPy on the CPU (float32 or float64); the last link of the ``auto`` chain."""

    name = "numpy"
    xp = np
    # A row's C logits reduced over a short last axis (MNIST: C = 10) take several times longer than the same
    # reductions over rows laid out classes-major, which the step's softmax then works on.
    classes_major_softmax = True

    def __init__(self, deterministic: bool = False):
        """``deterministic`` is accepted for the estimators' sake: NumPy's products are bitwise repeatable for a
        fixed thread count (which :meth:`thread_limit` fixes from the problem's size)."""

    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        """Any array kind (CuPy, torch on any device, DLPack) copied to the host once; NumPy arrays as they are."""
        return super().asarray(to_numpy(a), dtype)

    def thread_limit(self, flops_per_call: float, n_threads: int | None = None) -> ContextManager:
        return blas_thread_limit(blas_threads_for(flops_per_call, n_threads))

    def describe(self) -> str:
        return f"numpy (CPU, NumPy {np.__version__})"
