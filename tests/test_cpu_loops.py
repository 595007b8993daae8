"""The NumPy backend's compiled row-wise loops (backends/cpu_loops.py): the vectorised exp of the softmax."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu.backends import cpu_loops
from linclass_gpu.backends.cpu_loops import EXP_CHUNK, EXP_UNDERFLOW, exp_nonpositive_

pytestmark = pytest.mark.skipif(not cpu_loops.compiled_loops_enabled(),
                                reason="needs Numba (pip install linclass-gpu[cpu])")


def test_float32_exp_is_within_one_ulp_of_the_float64_exp():
    # 10⁶ points over every input that has a normal float32 result, an odd count so the last chunk is partial.
    x = np.linspace(np.float32(EXP_UNDERFLOW), 0, 1_000_001, dtype=np.float32)
    assert x.size % EXP_CHUNK
    values = x.copy()
    exp_nonpositive_(values)
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(values - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 1.0
    assert values[-1] == 1.0  # e⁰ exactly


def test_below_the_normal_range_nan_and_float64():
    values = np.array([EXP_UNDERFLOW * 1.01, -1000.0, -np.inf, np.nan, -0.0], dtype=np.float32)
    exp_nonpositive_(values)
    np.testing.assert_array_equal(values, [0.0, 0.0, 0.0, np.nan, 1.0])
    wide = -np.linspace(0, 700, 1001)
    values = wide.copy()
    exp_nonpositive_(values)
    np.testing.assert_array_max_ulp(values, np.exp(wide), maxulp=1)  # float64 takes libm's exp
