"""Every backend that runs here against the float64 oracle: the shared contract (backend_contract.py) and the
checks only the backends' own fused steps need (several sigmoid outputs, squared error, zero weights, allocations,
permutations)."""

from __future__ import annotations

import tracemalloc

import backend_contract as contract
import numpy as np
import pytest
from conftest import BACKEND_DTYPE_PAIRS
from tolerances import assert_close

from linclass_gpu import oracle
from linclass_gpu.backends import get_backend


@contract.WEIGHTED
@pytest.mark.parametrize("n,d,c", contract.SHAPES)
@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_softmax_loss_grad_matches_oracle(make_backend, rng, backend_name, dtype, n, d, c, weighted):
    contract.softmax_loss_grad_matches_oracle(make_backend(backend_name), rng, dtype, n, d, c, weighted)


@contract.WEIGHTED
@pytest.mark.parametrize("n,d", [(n, d) for n in (1, 7, 129) for d in (1, 13, 784)])
@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_sigmoid_loss_grad_matches_oracle(make_backend, rng, backend_name, dtype, n, d, weighted):
    contract.sigmoid_loss_grad_matches_oracle(make_backend(backend_name), rng, dtype, n, d, weighted)


SIGMOID_LOSSES = pytest.mark.parametrize("loss", ["sigmoid_loss_grad", "sigmoid_mse_loss_grad"],
                                         ids=["bce", "mse"])


@SIGMOID_LOSSES
@contract.WEIGHTED
@pytest.mark.parametrize("n,d,k", [(1, 13, 3), (7, 1, 37), (129, 13, 1), (129, 784, 3), (7, 31, 37)])
@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_sigmoid_outputs_loss_grad_matches_oracle(make_backend, rng, backend_name, dtype, n, d, k, weighted, loss):
    """``K`` independent sigmoids (an indicator matrix of targets, ``W`` (D, K)), both losses; K = 1 as a matrix."""
    backend = make_backend(backend_name)
    X, _, W, b = contract.random_problem(rng, n, d, k, dtype)
    Y = rng.integers(0, 2, size=(n, k))
    weights = contract.random_weights(rng, n, dtype, weighted)
    value, dW, db = getattr(backend, loss)(backend.asarray(X), backend.asarray(Y.astype(dtype)), W, b,
                                           sample_weight=contract.on_device(backend, weights))
    expected_value, expected_dW, expected_db = getattr(oracle, loss)(X, Y, W, b, sample_weight=weights)
    assert backend.to_numpy(dW).shape == (d, k) and backend.to_numpy(db).shape == (k,)
    assert_close(value, expected_value, dtype, d * k, "loss")
    assert_close(backend.to_numpy(dW), expected_dW, dtype, n, "dW")
    assert_close(backend.to_numpy(db), expected_db, dtype, n, "db")


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_binary_squared_error_matches_oracle_and_its_gradient_vanishes_when_confidently_wrong(
        make_backend, rng, backend_name, dtype):
    backend = make_backend(backend_name)
    X, _, W, b = contract.random_problem(rng, 33, 13, 1, dtype)
    y = rng.integers(0, 2, size=33)
    value, dw, db = backend.sigmoid_mse_loss_grad(backend.asarray(X), backend.asarray(y.astype(dtype)), W[:, 0],
                                                  b[0])
    expected_value, expected_dw, expected_db = oracle.sigmoid_mse_loss_grad(X, y, W[:, 0], b[0])
    assert_close(value, expected_value, dtype, 13, "loss")
    assert_close(backend.to_numpy(dw), expected_dw, dtype, 33, "dw")
    assert_close(backend.to_numpy(db), expected_db, dtype, 33, "db")
    # One row, logit −12, target 1: BCE's gradient is σ − y ≈ −1, the squared error's 2(σ − y)σ(1 − σ) ≈ −1e-5.
    one = np.ones((1, 1), dtype)
    _, _, bce_db = backend.sigmoid_loss_grad(backend.asarray(one), backend.asarray(one[0]), -12 * one[0], 0.0)
    _, _, mse_db = backend.sigmoid_mse_loss_grad(backend.asarray(one), backend.asarray(one[0]), -12 * one[0], 0.0)
    assert float(backend.to_numpy(bce_db)) < -0.99 and -1e-4 < float(backend.to_numpy(mse_db)) < 0
    # Logit 20, target 0: σ rounds to 1 in float32, yet σ' = e^{−20}/(1 + e^{−20})² ≈ 2e-9 keeps its digits.
    _, _, far_db = backend.sigmoid_mse_loss_grad(backend.asarray(one), backend.asarray(0 * one[0]), 20 * one[0], 0.0)
    expected_far_db = oracle.sigmoid_mse_loss_grad(np.ones((1, 1)), np.zeros(1), np.array([20.0]), 0.0)[2]
    np.testing.assert_allclose(float(backend.to_numpy(far_db)), expected_far_db, rtol=1e-4)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_uint8_inputs_with_a_scale_match_the_oracle(make_backend, rng, backend_name, dtype):
    contract.uint8_inputs_with_a_scale_match_the_oracle(make_backend(backend_name), rng, dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_extreme_logits_stay_finite(make_backend, backend_name, dtype):
    contract.extreme_logits_stay_finite(make_backend(backend_name), dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_decision_function_is_the_affine_map(make_backend, rng, backend_name, dtype):
    contract.decision_function_is_the_affine_map(make_backend(backend_name), rng, dtype)


@contract.WEIGHTED
@pytest.mark.parametrize("model,n,d,c,batch,l2,momentum,nesterov,fit_intercept", contract.STEP_CASES)
@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_twenty_fused_steps_match_twenty_oracle_steps(make_backend, rng, backend_name, dtype, model, n, d, c,
                                                      batch, l2, momentum, nesterov, fit_intercept, weighted):
    contract.twenty_fused_steps_match_twenty_oracle_steps(make_backend(backend_name), rng, dtype, model, n, d, c, batch,
                                                          l2, momentum, nesterov, fit_intercept, weighted)


@contract.WEIGHTED
@pytest.mark.parametrize("model,n,d,c,batch,options", contract.OPTION_CASES,
                         ids=[contract.option_id(case) for case in contract.OPTION_CASES])
@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_twenty_fused_steps_with_options_match_the_oracle(make_backend, rng, backend_name, dtype, model, n, d, c,
                                                          batch, options, weighted):
    contract.twenty_fused_steps_with_options_match_the_oracle(make_backend(backend_name), rng, dtype, model, n, d, c,
                                                              batch, options, weighted)


@pytest.mark.parametrize("options", contract.ROUND_TRIP_OPTIONS, ids=["momentum", "adagrad", "adam"])
@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_get_state_set_state_round_trip_resumes_bitwise(make_backend, rng, backend_name, dtype, options):
    contract.get_state_set_state_round_trip_resumes_bitwise(make_backend(backend_name), rng, dtype, options)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_unknown_optimizer_and_momentum_with_adagrad_are_rejected(make_backend, rng, backend_name, dtype):
    contract.unknown_optimizer_and_momentum_with_adagrad_are_rejected(make_backend(backend_name), rng, dtype)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_set_params_overwrites_weights_and_clears_momentum(make_backend, rng, backend_name, dtype):
    contract.set_params_overwrites_weights_and_clears_momentum(make_backend(backend_name), rng, dtype)


@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_a_batch_of_zero_weights_makes_no_step(make_backend, rng, backend_name, dtype, model):
    contract.a_batch_of_zero_weights_makes_no_step(make_backend(backend_name), rng, dtype, model)


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_sample_weight_of_the_wrong_length_is_rejected(make_backend, rng, backend_name, dtype):
    contract.sample_weight_of_the_wrong_length_is_rejected(make_backend(backend_name), rng, dtype)


@contract.WEIGHTED
@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_numpy_steps_allocate_nothing_the_size_of_the_logits(rng, model, weighted):
    """The weights are gathered into a buffer made once; what a step allocates is O(B), far below the (B, K) logits."""
    backend = get_backend("numpy")
    n, d, batch, n_outputs = 3000, 20, 512, 100 if model == "softmax" else 1
    X, y, W, b = contract.random_problem(rng, n, d, n_outputs, "float32")
    stepper = backend.fused_sgd(model, X, y % 2 if model == "sigmoid" else y, W, b, max_batch_size=batch,
                                momentum=0.9, l2=1e-4,
                                sample_weight=contract.random_weights(rng, n, "float32", weighted))
    rows = rng.permutation(n)
    stepper.step(rows[:batch], 0.1)  # first-call caches out of the way
    tracemalloc.start()
    try:
        for start in range(0, n - batch, batch):
            stepper.step(rows[start:start + batch], 0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # (B,) temporaries (row max, sums, per-row losses) and NumPy's fixed 8192-value ufunc buffer (32 KB), which does
    # not grow with the batch; a (B, K) temporary would be 200 KB for softmax.
    assert peak < 16 * batch * 8 + 40 * 1024, f"peak {peak} bytes; the logits are {batch * n_outputs * 4} bytes"


@pytest.mark.parametrize("backend_name", sorted({name for name, _ in BACKEND_DTYPE_PAIRS}))
def test_permutation_is_a_shuffle_fixed_by_the_rng_state(make_backend, backend_name):
    backend = make_backend(backend_name)
    orders = [backend.to_numpy(backend.permutation(1000, np.random.default_rng(seed))) for seed in (3, 3, 4)]
    assert np.array_equal(np.sort(orders[0]), np.arange(1000))
    assert np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[0], orders[2])
    rng = np.random.default_rng(3)
    first, second = (backend.to_numpy(backend.permutation(1000, rng)) for _ in range(2))
    assert not np.array_equal(first, second), "each epoch draws a new order"
