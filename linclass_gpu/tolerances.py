"""One tolerance table for every comparison against the float64 oracle (the test suite's and the notebooks').

The reference is always :mod:`linclass_gpu.oracle` in float64, fed the same (already rounded) inputs as the code under
test, so what remains is accumulation and rounding error of the computation itself. ``rtol`` is the relative error of
one rounding of the dtype the kernel computes or stores in; ``atol`` grows with the reduction length (``D`` for
logits, ``B`` for dW and db), since a sum of ``n`` rounded terms carries an absolute error growing with ``n`` (we use
the linear worst case, not the √n average, so the table never needs per-test tuning).
"""

from __future__ import annotations

import numpy as np

# dtype name -> (rtol, atol per unit of reduction length)
TOLERANCES = {
    "float64": (1e-10, 1e-13),
    "float32": (2e-5, 1e-6),
    "uint8": (2e-5, 1e-6),  # pixels times a scale are computed in float32
    "float16": (2e-3, 2e-5),  # a second GEMM operand (dZ) may be rounded to the input dtype
    "bfloat16": (1.6e-2, 1e-4),
}


def dtype_name(dtype) -> str:
    """``"float32"`` for ``"float32"``, ``np.float32`` or ``torch.float32`` alike."""
    if isinstance(dtype, str):
        return dtype
    if type(dtype).__module__ == "torch":
        return str(dtype).removeprefix("torch.")
    return np.dtype(dtype).name


def tolerance(dtype, reduction_length: int) -> tuple[float, float]:
    """``(rtol, atol)`` for outputs computed in ``dtype`` by a reduction over ``reduction_length`` terms."""
    rtol, atol_per_term = TOLERANCES[dtype_name(dtype)]
    return rtol, atol_per_term * max(1, reduction_length)


def assert_close(actual, expected, dtype, reduction_length: int, what: str = "") -> None:
    """Assert ``actual`` matches the float64 ``expected`` within the table's tolerance for ``dtype``."""
    rtol, atol = tolerance(dtype, reduction_length)
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol,
        err_msg=f"{what} (dtype={dtype}, reduction length={reduction_length})",
    )
