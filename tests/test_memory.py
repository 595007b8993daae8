"""An epoch of the NumPy backend never copies X: its allocations stay far below X's size (tracemalloc)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from linclass_gpu.backends import get_backend
from linclass_gpu.schedules import LearningRateSchedule
from linclass_gpu.training import train_sgd


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_an_epoch_allocates_nothing_the_size_of_x(dtype):
    rng = np.random.default_rng(0)
    n, d, c, batch = 20000, 200, 10, 128
    X = rng.integers(0, 256, size=(n, d)).astype(dtype)
    y = rng.integers(0, c, size=n)
    backend = get_backend("numpy")
    X_device, y_device = backend.asarray(X), backend.asarray(y)
    stepper = backend.fused_sgd("softmax", X_device, y_device, np.zeros((d, c), np.float32), np.zeros(c, np.float32),
                                max_batch_size=batch, momentum=0.9, l2=1e-4, x_scale=1 / 255)
    stepper.step(np.arange(batch), 0.0)  # compiled loops (Numba) are compiled or loaded at their first call
    tracemalloc.start()
    try:
        train_sgd(stepper, backend, n, epochs=2, batch_size=batch, schedule=LearningRateSchedule(),
                  rng=np.random.default_rng(0), progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The per-epoch permutation (n int64) and its index copy are the largest things an epoch may allocate.
    assert peak < 3 * n * 8 + 64 * 1024, f"peak {peak} bytes; X is {X.nbytes} bytes"
    assert np.shares_memory(X_device, X), "placing a C-contiguous X on the host backend copies nothing"
