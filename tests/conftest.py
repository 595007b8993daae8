"""Shared fixtures: the backends that can run here and the dtypes each computes in."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu.backends import available_backends, cpu_loops, get_backend
from linclass_gpu.backends.numpy_backend import NumpyBackend

try:  # Triton's interpreter mode is decided by the kernels package before triton loads, whichever test imports first
    from linclass_gpu.kernels import INTERPRET as TRITON_INTERPRETED
except ImportError:  # no torch or triton: the Triton tests skip themselves
    TRITON_INTERPRETED = False

# Test files that run Triton kernels without "triton" in their name.
KERNEL_TEST_FILES = ("test_epoch_kernel.py", "test_epoch_split_sgd.py", "test_softmax_tiled_sgd.py")


def pytest_collection_modifyitems(config, items):
    """Where the Triton kernels run under the interpreter (no CUDA device), the tests that launch them are ``slow``:
    they take most of the run, and ``pytest -m "not slow"`` is the quick subset. On a GPU they stay in it."""
    if not TRITON_INTERPRETED:
        return
    for item in items:
        if "triton" in item.nodeid or item.path.name in KERNEL_TEST_FILES:
            item.add_marker(pytest.mark.slow)

# Where Numba is installed the NumPy backend runs compiled loops (backends/cpu_loops.py); "numpy-array" is the same
# backend on its array-generic code, which users without Numba run.
NUMPY_ARRAY_CODE = "numpy-array"

# Backends that can run here (triton under its interpreter on a CPU-only machine), as the estimators name them.
BACKEND_NAMES = available_backends()

# Input dtypes each backend's contract tests use; the Triton kernel tests cover its low-precision inputs themselves.
BACKEND_DTYPES = {"numpy": ("float32", "float64"), NUMPY_ARRAY_CODE: ("float32", "float64"),
                  "cupy": ("float32", "float64"), "triton": ("float32",)}

# Every contract test runs on each of them, and on the NumPy backend's array code too where Numba is installed.
CONTRACT_BACKENDS = BACKEND_NAMES + ([NUMPY_ARRAY_CODE] if cpu_loops.compiled_loops_enabled() else [])
BACKEND_DTYPE_PAIRS = [(name, dtype) for name in CONTRACT_BACKENDS for dtype in BACKEND_DTYPES[name]]


class DLPackOnly:
    """An array from an unknown library that speaks nothing but DLPack, as a CuPy array or a JAX array does."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


@pytest.fixture(scope="session")
def backends():
    """One instance per backend name, made once (the Triton interpreter and CuPy are slow to start)."""
    return {}


@pytest.fixture
def make_backend(backends):
    """``make_backend(name)``: the session's instance of that backend."""

    def make(name):
        if name not in backends:
            backends[name] = NumpyBackend(compiled=False) if name == NUMPY_ARRAY_CODE else get_backend(name)
        return backends[name]

    return make


@pytest.fixture
def estimator_backend(monkeypatch):
    """``estimator_backend(name)``: what an estimator's ``backend=`` takes for a contract backend. Estimators know no
    "numpy-array": it is "numpy" with the compiled loops turned off (by their environment variable) for this test."""

    def name_for_estimators(name):
        if name == NUMPY_ARRAY_CODE:
            monkeypatch.setenv(cpu_loops.NUMBA_ENV, "0")
            return "numpy"
        return name

    return name_for_estimators


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
