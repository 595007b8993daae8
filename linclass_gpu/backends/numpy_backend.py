"""The CPU backend: :class:`~.array_backend.ArrayBackend` over NumPy, always available."""

from __future__ import annotations

import numpy as np

from .array_backend import ArrayBackend


class NumpyBackend(ArrayBackend):
    """NumPy on the CPU (float32 or float64); the last link of the ``auto`` chain."""

    name = "numpy"
    xp = np

    def describe(self) -> str:
        return f"numpy (CPU, NumPy {np.__version__})"
