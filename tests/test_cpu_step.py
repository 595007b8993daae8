"""The NumPy backend's compiled step (backends/cpu_step.py): against the float64 oracle on shapes where it runs, and
bitwise against the same backend's step taken piece by piece through its seams."""

from __future__ import annotations

import backend_contract as contract
import numpy as np
import pytest

from linclass_gpu.backends import cpu_amx, cpu_loops, cpu_step
from linclass_gpu.backends.array_backend import ArrayFusedSGD, compute_dtype
from linclass_gpu.backends.cpu_products import products_pay
from linclass_gpu.backends.cpu_step import CompiledFusedSGD, compiles
from linclass_gpu.backends.numpy_backend import NumpyBackend

pytestmark = pytest.mark.skipif(not cpu_loops.compiled_loops_enabled(),
                                reason="needs Numba (pip install linclass-gpu[cpu])")

# Shapes where the compiled products pay for a batch of 128 (and not for the short batches the wrap leaves).
N_ROWS, N_FEATURES, N_OUTPUTS, BATCH = 300, 520, 11, 128

OPTIONS = [dict(l2=1e-2, momentum=0.9), dict(l1=0.05), dict(l2=1e-3, l1=0.02, momentum=0.5, nesterov=True,
                                                            fit_intercept=False),
           dict(optimizer="adagrad", l2=1e-2, l1=0.05), dict(optimizer="adam", l2=1e-2, l1=0.05)]


def test_it_runs_where_the_compiled_products_pay():
    assert products_pay(BATCH, N_FEATURES, N_OUTPUTS) and not products_pay(N_ROWS % BATCH, N_FEATURES, N_OUTPUTS)


@contract.WEIGHTED
@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: "-".join(f"{k}={v}" for k, v in options.items()))
@pytest.mark.parametrize("model,n_outputs", [("softmax", N_OUTPUTS), ("sigmoid", 9), ("sigmoid_mse", 13)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twenty_compiled_steps_match_the_oracle(rng, dtype, model, n_outputs, options, weighted):
    backend = NumpyBackend(compiled=True)
    assert backend.fused_step is CompiledFusedSGD
    contract.run_twenty_steps(backend, rng, dtype, model, N_ROWS, N_FEATURES, n_outputs, BATCH, weighted, **options)


def _problem(rng, model, x_dtype, n_rows, n_outputs, weighted):
    """Features of ``x_dtype`` (pixels 0..255 for integers), targets, initial parameters and sample weights."""
    if np.dtype(x_dtype).kind in "ui":
        X = rng.integers(0, 256, size=(n_rows, N_FEATURES)).astype(x_dtype)
    else:
        X = rng.normal(size=(n_rows, N_FEATURES)).astype(x_dtype)
    y = (rng.integers(0, n_outputs, size=n_rows) if model == "softmax"
         else rng.integers(0, 2, size=(n_rows, n_outputs)))
    W = (rng.normal(size=(N_FEATURES, n_outputs)) / np.sqrt(N_FEATURES)).astype(np.float32)
    b = rng.normal(size=n_outputs).astype(np.float32)
    return X, y, W, b, contract.random_weights(rng, n_rows, compute_dtype(X.dtype), weighted)


@pytest.mark.parametrize("options", OPTIONS[:2] + OPTIONS[3:], ids=["momentum", "l1", "adagrad", "adam"])
@pytest.mark.parametrize("model", ["softmax", "sigmoid_mse"])
@pytest.mark.parametrize("x_dtype,x_scale", [("uint8", 1 / 255), ("int16", 1 / 255), ("float32", 1.0),
                                             ("float64", 0.5)])
@pytest.mark.parametrize("batch_size,n_rows", [(128, 1000), (600, 1350)],
                         ids=["B<D, short last batch", "B>D, compiled short last batch"])
def test_runs_of_steps_equal_the_seams_step_by_step_bitwise(monkeypatch, rng, batch_size, n_rows, x_dtype, x_scale,
                                                            model, options):
    """An epoch in compiled runs (several calls, split where FLOPS_PER_CALL says), then single steps, against the
    array step over the same compiled seams: the same parameters, optimizer state and loss, bit for bit. With
    B > D the input scale goes on dW, else on dZ. The AMX tiles are off: their products are not the seams' (their
    own tests are in test_cpu_amx.py)."""
    monkeypatch.setenv(cpu_amx.AMX_ENV, "0")
    X, y, W, b, weights = _problem(rng, model, x_dtype, n_rows, N_OUTPUTS, weighted=True)
    backend = NumpyBackend(compiled=True)
    settings = dict(max_batch_size=batch_size, x_scale=x_scale, sample_weight=weights, **options)
    compiled = backend.fused_sgd(model, X, y, W, b, **settings)
    seams = ArrayFusedSGD(backend, model, X, backend._sigmoid_targets(y, N_OUTPUTS, compiled.W.dtype)
                          if model != "softmax" else y, W, b, **{**dict(l2=0.0, momentum=0.0, nesterov=False,
                                                                         fit_intercept=True), **settings})
    monkeypatch.setattr(cpu_step, "FLOPS_PER_CALL", 3 * 4.0 * batch_size * N_FEATURES * N_OUTPUTS)  # 3 steps a call
    n_steps = -(-n_rows // batch_size)
    rates = 0.3 / (1 + np.arange(n_steps))
    for epoch in range(2):
        rows = rng.permutation(n_rows)
        told = []
        compiled.run_epoch(rows, rates, batch_size, told.append)
        assert told == [3] * (n_steps // 3) + [n_steps % 3] * (n_steps % 3 > 0)
        for step, rate in enumerate(rates):
            seams.step(rows[step * batch_size:(step + 1) * batch_size], float(rate))
    for step, rate in enumerate(rates[:3]):  # single steps
        rows = rng.permutation(n_rows)[:batch_size]
        compiled.step(rows, float(rate))
        seams.step(rows, float(rate))
    expected, state = seams.get_state(), compiled.get_state()
    assert state.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(state[name], expected[name], err_msg=name)
    assert compiled.pop_loss_sum() == seams.pop_loss_sum()


def test_float16_rows_take_the_array_step(rng):
    """Numba does not read float16: such rows run the array step (the same arithmetic as the seams, bit for bit)."""
    assert compiles(np.zeros((2, 3), np.uint8), 10) and not compiles(np.zeros((2, 3), np.float16), 10)
    X, y, W, b, _ = _problem(rng, "softmax", "float16", 256, N_OUTPUTS, weighted=False)
    backend = NumpyBackend(compiled=True)
    compiled = backend.fused_sgd("softmax", X, y, W, b, max_batch_size=BATCH, momentum=0.9)
    seams = ArrayFusedSGD(backend, "softmax", X, y, W, b, max_batch_size=BATCH, l2=0.0, momentum=0.9,
                          nesterov=False, fit_intercept=True, x_scale=1.0, sample_weight=None)
    rows = rng.permutation(256)
    compiled.run_epoch(rows, np.array([0.1, 0.2]), BATCH)
    seams.run_epoch(rows, np.array([0.1, 0.2]), BATCH)
    np.testing.assert_array_equal(compiled.get_params()[0], seams.get_params()[0])


def test_the_array_code_backend_keeps_the_array_step():
    assert NumpyBackend(compiled=False).fused_step is ArrayFusedSGD
