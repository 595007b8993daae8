"""The compiled step's products on AMX tiles (backends/cpu_amx.py): the bfloat16 split is exact, the products and
twenty steps match the float64 oracle, a run equals its steps taken one at a time bitwise, and the tiles run only
where they should (X of at most 8 bits, whose compute dtype is float32; the switch on)."""

from __future__ import annotations

import os
import subprocess
import sys

import backend_contract as contract
import numpy as np
import pytest

from linclass_gpu import oracle
from linclass_gpu.backends import cpu_amx, cpu_loops
from linclass_gpu.backends.cpu_step import CompiledFusedSGD
from linclass_gpu.backends.numpy_backend import NumpyBackend
from linclass_gpu.tolerances import assert_close

pytestmark = pytest.mark.skipif(not cpu_loops.compiled_loops_enabled(),
                                reason="needs Numba (pip install linclass-gpu[cpu])")
needs_amx = pytest.mark.skipif(not cpu_amx.amx_enabled(), reason="needs a CPU with AMX-BF16 (Sapphire Rapids on)")

# A shape inside the compiled products' band (cpu_products.products_pay), D not a multiple of the tiles' 64.
N_ROWS, N_FEATURES, BATCH = 300, 520, 128


def _integer_rows(rng, x_dtype, shape):
    """Integers spanning the dtype: 0..255 for uint8, -128..127 for int8."""
    info = np.iinfo(x_dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(x_dtype)


def test_three_bfloat16_parts_sum_to_the_float32_exactly(rng):
    """Wherever the parts stay in float32's normal range (|w| above about 2⁻¹⁰⁶; below it the tiles read them as 0)."""
    values = np.concatenate([rng.normal(size=500) * 10.0 ** rng.integers(-30, 30, size=500),
                             [0.0, -0.0, 1.0, -3.0e38, 2.0 ** -100, np.pi]]).astype(np.float32)
    for value in values:
        parts = [np.uint32(code) << np.uint32(16) for code in cpu_amx.bfloat16_parts(value)]
        floats = np.array(parts, dtype=np.uint32).view(np.float32)
        assert all(code <= 0xFFFF for code in cpu_amx.bfloat16_parts(value))
        assert float(floats.astype(np.float64).sum()) == float(value), value


def test_non_finite_values_give_non_finite_parts():
    for value in (np.inf, -np.inf, np.nan):
        codes = cpu_amx.bfloat16_parts(np.float32(value))
        assert not np.isfinite(np.array(codes[0] << 16, dtype=np.uint32).view(np.float32))


@pytest.mark.parametrize("dtype,exact", [("uint8", True), ("int8", True), ("bool", True), ("int16", False),
                                         ("float32", False), ("float16", False)])
def test_only_integers_of_at_most_8_bits_are_exact_in_bfloat16(dtype, exact):
    assert cpu_amx.exact_in_bfloat16(dtype) is exact


def test_the_environment_switch_turns_the_tiles_off(monkeypatch, rng):
    monkeypatch.setenv(cpu_amx.AMX_ENV, "0")
    assert not cpu_amx.amx_enabled()
    X, y, W, b = _problem(rng, "uint8", 10)
    assert not NumpyBackend(compiled=True).fused_sgd("softmax", X, y, W, b, max_batch_size=BATCH)._amx


@needs_amx
@pytest.mark.parametrize("x_dtype", ["float32", "float64", "int16"])
def test_the_tiles_run_for_small_integers_only(rng, x_dtype):
    X, y, W, b = _problem(rng, "uint8", 10)
    backend = NumpyBackend(compiled=True)
    assert backend.fused_sgd("softmax", X, y, W, b, max_batch_size=BATCH)._amx
    stepper = backend.fused_sgd("softmax", X.astype(x_dtype), y, W, b, max_batch_size=BATCH)
    assert isinstance(stepper, CompiledFusedSGD) and not stepper._amx


@needs_amx
@pytest.mark.parametrize("x_dtype", ["uint8", "int8"])
@pytest.mark.parametrize("n_rows,n_features,n_outputs", [(128, 784, 10), (67, 1000, 16), (200, 100, 9), (1, 64, 1)],
                         ids=["mnist", "odd rows, 16 outputs", "padded rows and features", "one row"])
def test_the_tile_products_match_the_float64_products(rng, x_dtype, n_rows, n_features, n_outputs):
    X = _integer_rows(rng, x_dtype, (n_rows + 5, n_features))
    rows = rng.permutation(n_rows + 5)[:n_rows]
    W = rng.normal(size=(n_features, n_outputs)).astype(np.float32)
    dZ = rng.normal(size=(n_rows, n_outputs)).astype(np.float32)
    width, tile_rows, even = cpu_amx.padded(n_features), cpu_amx.padded(n_rows), n_outputs + n_outputs % 2
    logits_config, gradient_config = cpu_amx.tile_configs(n_outputs)
    # Earlier rows left in the buffers, as a previous step leaves them: they meet only zero coefficients.
    x_bits = _integer_rows(rng, "uint8", (tile_rows, width)).astype(np.uint16)
    x_pairs = np.zeros((tile_rows // 2, width), dtype=np.uint32)
    cpu_amx.gather_rows_(X, rows, n_rows, x_bits, x_pairs)
    weights_t = np.zeros((even, width), dtype=np.float32)
    weights_t[:n_outputs, :n_features] = W.T
    weight_parts = np.zeros((cpu_amx.N_PARTS, width // 2, cpu_amx.TILE_PAIRS), dtype=np.uint32)
    codes = np.zeros((cpu_amx.N_PARTS, even, width), dtype=np.uint16)
    cpu_amx.pack_weight_parts_(weights_t, n_outputs, codes, weight_parts)
    Z16 = np.full((tile_rows, cpu_amx.TILE_PAIRS), np.nan, dtype=np.float32)
    cpu_amx.logits_product_amx_(x_bits, weight_parts, Z16, logits_config)
    X64 = X[rows].astype(np.float64)
    assert_close(Z16[:n_rows, :n_outputs], X64 @ W.astype(np.float64), "float32", n_features, "Z = X W")
    coefficient_parts = np.ones((cpu_amx.N_PARTS, even, tile_rows), dtype=np.uint16)
    cpu_amx.pack_coefficient_parts_(dZ, coefficient_parts)
    gradient_t = np.full((even, width), np.nan, dtype=np.float32)
    cpu_amx.weight_gradient_product_amx_(coefficient_parts, x_pairs, gradient_t, gradient_config)
    assert_close(gradient_t[:n_outputs, :n_features], (X64.T @ dZ.astype(np.float64)).T, "float32", n_rows,
                 "dWᵀ = (Xᵀ dZ)ᵀ")
    assert not gradient_t[:, n_features:].any(), "the padding features' gradient is 0"


def _problem(rng, x_dtype, n_outputs, model="softmax", n_rows=N_ROWS):
    X = _integer_rows(rng, x_dtype, (n_rows, N_FEATURES))
    y = (rng.integers(0, n_outputs, size=n_rows) if model == "softmax"
         else rng.integers(0, 2, size=(n_rows, n_outputs)))
    W = (rng.normal(size=(N_FEATURES, n_outputs)) / np.sqrt(N_FEATURES)).astype(np.float32)
    return X, y, W, rng.normal(size=n_outputs).astype(np.float32)


OPTIONS = [dict(l2=1e-2, momentum=0.9), dict(l1=0.05, fit_intercept=False), dict(optimizer="adagrad", l2=1e-2),
           dict(optimizer="adam", l2=1e-2, l1=0.05)]


@needs_amx
@contract.WEIGHTED
@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: "-".join(f"{k}={v}" for k, v in options.items()))
@pytest.mark.parametrize("model,n_outputs", [("softmax", 10), ("sigmoid", 9), ("sigmoid_mse", 15)])
@pytest.mark.parametrize("x_dtype,x_scale", [("uint8", 1 / 255), ("int8", 1 / 128)])
def test_twenty_tile_steps_match_the_oracle(rng, x_dtype, x_scale, model, n_outputs, options, weighted):
    X, y, W, b = _problem(rng, x_dtype, n_outputs, model)
    weights = contract.random_weights(rng, N_ROWS, "float32", weighted)
    stepper = NumpyBackend(compiled=True).fused_sgd(model, X, y, W, b, max_batch_size=BATCH, x_scale=x_scale,
                                                    sample_weight=weights, **options)
    assert stepper._amx
    order = rng.permutation(N_ROWS)
    W_ref, b_ref = W.astype(np.float64), b.astype(np.float64)
    velocity_W, velocity_b = np.zeros_like(W_ref), np.zeros_like(b_ref)
    accumulator_W, accumulator_b = np.zeros_like(W_ref), np.zeros_like(b_ref)
    for step in range(20):
        batch_rows = order[(step * BATCH) % (N_ROWS - BATCH):][:BATCH]  # full batches only: the tiles' steps
        learning_rate = 0.3 / (1 + step)
        stepper.step(batch_rows, learning_rate)
        _, W_ref, b_ref, velocity_W, velocity_b, accumulator_W, accumulator_b = oracle.sgd_step(
            model, X[batch_rows].astype(np.float64), y[batch_rows], W_ref, b_ref, velocity_W, velocity_b,
            learning_rate=learning_rate, x_scale=x_scale, sample_weight=None if weights is None
            else weights[batch_rows], accumulator_W=accumulator_W, accumulator_b=accumulator_b, step_count=step + 1,
            **options)
    W_out, b_out = stepper.get_params()
    assert_close(W_out, W_ref, "float32", 20 * N_FEATURES, "W after 20 steps")
    assert_close(b_out, b_ref, "float32", 20 * BATCH, "b after 20 steps")


@needs_amx
@pytest.mark.parametrize("batch_size", [128, 129], ids=["B=128", "odd B, padded to 192"])
def test_a_run_of_tile_steps_equals_its_steps_one_at_a_time_bitwise(rng, batch_size):
    """run_epoch (several steps per compiled call, a short last batch taking the array step) and step() give the
    same bits: both go through the same tile products."""
    X, y, W, b = _problem(rng, "uint8", 10, n_rows=1000)
    backend = NumpyBackend(compiled=True)
    settings = dict(max_batch_size=batch_size, x_scale=1 / 255, l2=1e-3, momentum=0.9)
    run, steps = (backend.fused_sgd("softmax", X, y, W, b, **settings) for _ in range(2))
    assert run._amx and steps._amx
    rows = rng.permutation(1000)
    rates = 0.2 / (1 + np.arange(-(-1000 // batch_size)))
    run.run_epoch(rows, rates, batch_size)
    for step, rate in enumerate(rates):
        steps.step(rows[step * batch_size:(step + 1) * batch_size], float(rate))
    for name, value in steps.get_state().items():
        np.testing.assert_array_equal(run.get_state()[name], value, err_msg=name)
    assert run.pop_loss_sum() == steps.pop_loss_sum()


@needs_amx
def test_a_non_finite_weight_reaches_the_logits(rng):
    X, y, W, b = _problem(rng, "uint8", 10)
    W[3, 4] = np.inf
    stepper = NumpyBackend(compiled=True).fused_sgd("softmax", X, y, W, b, max_batch_size=BATCH)
    stepper.step(np.arange(BATCH), 0.1)
    assert not np.isfinite(stepper.get_params()[0]).all()


GENERIC_CPU_FIT = """
import numpy as np
from linclass_gpu.backends import cpu_amx
from linclass_gpu.backends.numpy_backend import NumpyBackend
assert not cpu_amx.HOST_EMITS_AMX and not cpu_amx.amx_enabled()
rng = np.random.default_rng(0)
X, y = rng.integers(0, 256, size=(300, 520)).astype(np.uint8), rng.integers(0, 10, size=300)
stepper = NumpyBackend(compiled=True).fused_sgd("softmax", X, y, np.zeros((520, 10), np.float32),
                                                np.zeros(10, np.float32), max_batch_size=128, x_scale=1 / 255)
stepper.run_epoch(rng.permutation(300), np.full(3, 0.1), 128)
print(np.isfinite(stepper.get_params()[0]).all() and stepper.get_params()[0].any())
"""


@pytest.mark.slow
def test_a_cpu_without_amx_compiles_the_step_and_trains(tmp_path):
    """Numba targeting a generic x86-64 (as on a CPU without AMX) compiles the step, tile branch and all (its tile
    instructions become traps, never reached), and trains on the FMA loops. A cache of its own: a build for another
    CPU must not land in the shared one."""
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", GENERIC_CPU_FIT], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "True"
