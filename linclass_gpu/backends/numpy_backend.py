"""The CPU backend: :class:`~.array_backend.ArrayBackend` over NumPy, always available."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays import to_numpy
from .array_backend import ArrayBackend


class NumpyBackend(ArrayBackend):
    """NumPy on the CPU (float32 or float64); the last link of the ``auto`` chain."""

    name = "numpy"
    xp = np
    # A row's C logits reduced over a short last axis (MNIST: C = 10) take several times longer than the same
    # reductions over rows laid out classes-major, which the step's softmax then works on.
    classes_major_softmax = True

    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        """Any array kind (CuPy, torch on any device, DLPack) copied to the host once; NumPy arrays as they are."""
        return super().asarray(to_numpy(a), dtype)

    def describe(self) -> str:
        return f"numpy (CPU, NumPy {np.__version__})"
