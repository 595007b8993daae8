"""Backends start safely from several threads at once (the Triton backend may re-import its kernel modules)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import BACKEND_NAMES

from linclass_gpu import SoftmaxRegression


@pytest.mark.skipif("triton" not in BACKEND_NAMES, reason="needs torch and triton")
def test_two_triton_fits_in_parallel_threads():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    results, errors = {}, []

    def fit(name):
        try:
            model = SoftmaxRegression(backend="triton", epochs=1, batch_size=16, tol=None, shuffle=False)
            results[name] = model.fit(X, y).coef_
        except BaseException as error:  # noqa: BLE001 (reported to the main thread below)
            errors.append(error)

    threads = [threading.Thread(target=fit, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    np.testing.assert_array_equal(results["first"], results["second"])
