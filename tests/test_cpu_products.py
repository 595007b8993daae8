"""The NumPy backend's compiled products (backends/cpu_products.py) against the float64 product, and where they run."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu.backends import cpu_loops
from linclass_gpu.backends.cpu_products import (
    PRODUCT_MIN_FEATURES,
    PRODUCT_MIN_ROWS,
    PRODUCT_OUTPUTS,
    logits_product_,
    products_pay,
    weight_gradient_product_,
)
from linclass_gpu.backends.numpy_backend import NumpyBackend
from linclass_gpu.threads import FLOPS_PER_THREAD
from linclass_gpu.tolerances import assert_close

pytestmark = pytest.mark.skipif(not cpu_loops.compiled_loops_enabled(),
                                reason="needs Numba (pip install linclass-gpu[cpu])")

# Rows around the 4- and 8-row blocks (1, 5, 8, 37), odd and even output counts up to the largest, MNIST's shape.
SHAPES = [(1, 1, 1), (5, 3, 2), (8, 7, 3), (37, 13, 16), (9, 1, 5), (128, 784, 10)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_rows,n_features,n_outputs", SHAPES)
def test_products_match_the_float64_product(rng, dtype, n_rows, n_features, n_outputs):
    X = rng.normal(size=(n_rows, n_features)).astype(dtype)
    W = rng.normal(size=(n_features, n_outputs)).astype(dtype)
    dZ = rng.normal(size=(n_rows, n_outputs)).astype(dtype)
    Z, dW = np.full((n_rows, n_outputs), np.nan, dtype), np.full((n_features, n_outputs), np.nan, dtype)
    logits_product_(X, W, Z)
    weight_gradient_product_(X, dZ, dW)
    assert_close(Z, X.astype(np.float64) @ W.astype(np.float64), dtype, n_features, "X W")
    assert_close(dW, X.T.astype(np.float64) @ dZ.astype(np.float64), dtype, n_rows, "Xᵀ dZ")


def test_a_non_finite_weight_propagates_as_through_blas(rng):
    """Only reassociation and contraction are allowed: no fast-math assumption that values are finite."""
    X = rng.normal(size=(6, 5)).astype(np.float32)
    W = rng.normal(size=(5, 3)).astype(np.float32)
    W[2, 1] = np.inf
    Z = np.empty((6, 3), np.float32)
    logits_product_(X, W, Z)
    expected = X @ W
    np.testing.assert_array_equal(np.isfinite(Z), np.isfinite(expected))
    assert not np.isfinite(Z[:, 1]).any() and np.isfinite(Z[:, [0, 2]]).all()


def test_the_backend_takes_them_inside_their_band_only(monkeypatch, rng):
    assert products_pay(128, 784, 10)  # an MNIST step
    assert not products_pay(96, 784, 10)  # its last, partial batch
    for n_outputs in (1, 8, 16):  # where BLAS's micro-kernels fit
        assert not products_pay(128, 784, n_outputs)
    assert not products_pay(128, 100, 10)  # short rows
    assert not products_pay(4096, 4096, 10)  # worth BLAS's threads
    assert all(products_pay(PRODUCT_MIN_ROWS, PRODUCT_MIN_FEATURES, n_outputs) for n_outputs in PRODUCT_OUTPUTS)
    widest = max(PRODUCT_OUTPUTS)
    assert not products_pay(int(FLOPS_PER_THREAD // (2 * PRODUCT_MIN_FEATURES * widest)) + 1, PRODUCT_MIN_FEATURES,
                            widest)
    calls = []
    monkeypatch.setattr("linclass_gpu.backends.numpy_backend.logits_product_", lambda *args: calls.append("Z"))
    monkeypatch.setattr("linclass_gpu.backends.numpy_backend.weight_gradient_product_",
                        lambda *args: calls.append("dW"))
    for compiled, n_outputs, expected in ((True, 10, ["Z", "dW"]), (True, 8, []), (False, 10, [])):
        calls.clear()
        backend = NumpyBackend(compiled=compiled)
        X, W = rng.normal(size=(128, 784)), rng.normal(size=(784, n_outputs))
        Z, dW = np.empty((128, n_outputs)), np.empty((784, n_outputs))
        backend.logits_product_(X, W, Z)
        backend.weight_gradient_product_(X, Z, dW)
        assert calls == expected
        if not expected:  # BLAS wrote them
            np.testing.assert_allclose(Z, X @ W)
            np.testing.assert_allclose(dW, X.T @ Z)
