"""The backend contract: the checks every backend passes against the float64 oracle (loss, gradients, logits, 20
fused SGD steps, state round trips, refused options), on odd shapes, without and with per-row sample weights.

Each check takes a backend instance; test_backend_contract.py runs them on every backend that runs here, and
test_cupy_backend.py on the CUDA warp emulator and the GPU. Not a test module itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import assert_close

from linclass_gpu import oracle

SHAPES = [(n, d, c) for n in (1, 7, 129) for d in (1, 13, 784) for c in (2, 3, 10, 37)]


def random_problem(rng, n, d, c, dtype):
    """Inputs rounded to ``dtype`` once, so the oracle and the backend see the same numbers."""
    X = rng.normal(size=(n, d)).astype(dtype)
    W = (rng.normal(size=(d, c)) / np.sqrt(d)).astype(dtype)
    b = rng.normal(size=c).astype(dtype)
    return X, rng.integers(0, c, size=n), W, b


def random_weights(rng, n, dtype, weighted=True):
    """Sample weights in [0, 3) rounded to ``dtype``, 0 on every third row (row 0 too); None when not ``weighted``."""
    if not weighted:
        return None
    return np.where(np.arange(n) % 3 == 0, 0.0, rng.uniform(0, 3, size=n)).astype(dtype)


def on_device(backend, a):
    """``a`` on the backend's device; None stays None."""
    return None if a is None else backend.asarray(a)


WEIGHTED = pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])


def softmax_loss_grad_matches_oracle(backend, rng, dtype, n, d, c, weighted):
    X, y, W, b = random_problem(rng, n, d, c, dtype)
    weights = random_weights(rng, n, dtype, weighted)
    loss, dW, db = backend.softmax_loss_grad(backend.asarray(X), backend.asarray(y), W, b,
                                             sample_weight=on_device(backend, weights))
    expected_loss, expected_dW, expected_db = oracle.softmax_loss_grad(X, y, W, b, sample_weight=weights)
    assert_close(loss, expected_loss, dtype, d, "loss")
    assert_close(backend.to_numpy(dW), expected_dW, dtype, n, "dW")
    assert_close(backend.to_numpy(db), expected_db, dtype, n, "db")


def sigmoid_loss_grad_matches_oracle(backend, rng, dtype, n, d, weighted):
    X, y, W, b = random_problem(rng, n, d, 1, dtype)
    y = (y + rng.integers(0, 2, size=n)) % 2  # random_problem's labels are all 0 for one class
    weights = random_weights(rng, n, dtype, weighted)
    loss, dw, db = backend.sigmoid_loss_grad(backend.asarray(X), backend.asarray(y.astype(dtype)), W[:, 0], b[0],
                                             sample_weight=on_device(backend, weights))
    expected_loss, expected_dw, expected_db = oracle.sigmoid_loss_grad(X, y, W[:, 0], b[0], sample_weight=weights)
    assert_close(loss, expected_loss, dtype, d, "loss")
    assert_close(backend.to_numpy(dw), expected_dw, dtype, n, "dw")
    assert_close(backend.to_numpy(db), expected_db, dtype, n, "db")


def uint8_inputs_with_a_scale_match_the_oracle(backend, rng, dtype):
    pixels = rng.integers(0, 256, size=(33, 784), dtype=np.uint8)
    _, y, W, b = random_problem(rng, 33, 784, 10, dtype)
    loss, dW, db = backend.softmax_loss_grad(backend.asarray(pixels), backend.asarray(y), W, b, x_scale=1 / 255)
    expected_loss, expected_dW, expected_db = oracle.softmax_loss_grad(pixels, y, W, b, x_scale=1 / 255)
    assert_close(loss, expected_loss, "uint8", 784, "loss")
    assert_close(backend.to_numpy(dW), expected_dW, "uint8", 33, "dW")
    assert_close(backend.to_numpy(db), expected_db, "uint8", 33, "db")


def extreme_logits_stay_finite(backend, dtype):
    X = np.array([[1.0], [-1.0], [1.0]], dtype=dtype)
    W = np.array([[1e4, -1e4, 0.0]], dtype=dtype)  # logits of ±1e4
    y = np.array([1, 0, 2])
    loss, dW, db = backend.softmax_loss_grad(backend.asarray(X), backend.asarray(y), W, np.zeros(3, dtype))
    expected_loss, expected_dW, _ = oracle.softmax_loss_grad(X, y, W, np.zeros(3))
    assert np.isfinite(loss) and np.isfinite(backend.to_numpy(dW)).all() and np.isfinite(backend.to_numpy(db)).all()
    assert_close(loss, expected_loss, dtype, 1, "loss")
    assert_close(backend.to_numpy(dW), expected_dW, dtype, 3, "dW")
    z_loss, dw, _ = backend.sigmoid_loss_grad(backend.asarray(X), backend.asarray(np.array([0, 1, 1], dtype)),
                                              np.array([1e4], dtype), 0.0)
    assert np.isfinite(z_loss) and np.isfinite(backend.to_numpy(dw)).all()
    assert_close(z_loss, oracle.sigmoid_loss_grad(X, np.array([0, 1, 1]), np.array([1e4]), 0.0)[0], dtype, 1)


def decision_function_is_the_affine_map(backend, rng, dtype):
    X, _, W, b = random_problem(rng, 129, 13, 10, dtype)
    logits = backend.to_numpy(backend.decision_function(backend.asarray(X), W, b, x_scale=0.5))
    assert_close(logits, 0.5 * X.astype(np.float64) @ W + b, dtype, 13, "logits")


STEP_CASES = [
    # model, n, d, c, batch, l2, momentum, nesterov, fit_intercept
    ("softmax", 129, 13, 10, 32, 0.0, 0.0, False, True),  # 129 = 4·32 + 1: a last batch of one row
    ("softmax", 7, 784, 37, 3, 1e-2, 0.9, False, True),
    ("softmax", 50, 31, 3, 16, 1e-3, 0.9, True, False),
    ("sigmoid", 129, 13, 1, 20, 1e-2, 0.5, True, True),
    ("sigmoid", 7, 1, 1, 7, 0.0, 0.0, False, False),
    ("sigmoid", 129, 13, 5, 20, 1e-2, 0.5, False, True),  # five independent sigmoids (multilabel, one-vs-rest)
    ("sigmoid_mse", 129, 13, 1, 20, 1e-2, 0.5, True, True),
    ("sigmoid_mse", 50, 31, 3, 16, 0.0, 0.9, False, False),
]


# Penalties and optimizers beyond STEP_CASES: model, n, d, c, batch, the fused_sgd / oracle.sgd_step options.
# An l1 of 0.05 over 20 steps of lr 0.3/(1 + step) thresholds ~0.05 in all: some weights of scale 1/√D end at exactly
# 0 (with momentum fewer stay there, hence the larger l1).
OPTION_CASES = [
    ("softmax", 129, 13, 10, 32, dict(l1=0.05)),  # L1 alone
    ("softmax", 50, 31, 3, 16, dict(l1=0.1, l2=1e-2, momentum=0.9)),  # elastic net with momentum
    ("sigmoid", 129, 13, 1, 20, dict(l1=0.1, l2=1e-3, momentum=0.5, nesterov=True, fit_intercept=False)),
    # AdaGrad: alone, with the elastic net (L1's threshold per parameter), and a frozen intercept.
    ("softmax", 129, 13, 10, 32, dict(optimizer="adagrad")),
    ("softmax", 50, 31, 3, 16, dict(optimizer="adagrad", l2=1e-2, l1=0.1)),
    ("sigmoid", 129, 13, 1, 20, dict(optimizer="adagrad", l1=0.1, fit_intercept=False)),
    # Adam: alone, with the elastic net, and a frozen intercept.
    ("softmax", 129, 13, 10, 32, dict(optimizer="adam")),
    ("softmax", 50, 31, 3, 16, dict(optimizer="adam", l2=1e-2, l1=0.1)),
    ("sigmoid", 129, 13, 1, 20, dict(optimizer="adam", l1=0.1, fit_intercept=False)),
    ("sigmoid", 129, 13, 5, 20, dict(optimizer="adam", l2=1e-2, l1=0.1)),
    ("sigmoid_mse", 129, 13, 3, 20, dict(optimizer="adagrad", l1=0.1)),
]


def option_id(case) -> str:
    """A readable test id for an OPTION_CASES entry."""
    model, *_, options = case
    return "-".join([model] + [f"{name}={value}" for name, value in options.items()])


def run_twenty_steps(backend, rng, dtype, model, n, d, c, batch, weighted, **options):
    """20 fused steps and 20 oracle steps over the same batches; asserts they agree and returns the backend's W."""
    X, y, W, b = random_problem(rng, n, d, c, dtype)
    if model != "softmax":  # {0, 1} targets: one per row for one output, an indicator matrix for several
        y = rng.integers(0, 2, size=n if c == 1 else (n, c))
    weights = random_weights(rng, n, dtype, weighted)
    stepper = backend.fused_sgd(model, backend.asarray(X), backend.asarray(y), W, b, max_batch_size=batch,
                                sample_weight=on_device(backend, weights), **options)
    order = rng.permutation(n)
    rows = backend.asarray(order)
    W_ref, b_ref = W.astype(np.float64), b.astype(np.float64)
    velocity_W, velocity_b = np.zeros_like(W_ref), np.zeros_like(b_ref)
    accumulator_W, accumulator_b = np.zeros_like(W_ref), np.zeros_like(b_ref)
    expected_loss_sum = 0.0
    for step in range(20):
        start = (step * batch) % n
        batch_rows = order[start:start + batch]
        learning_rate = 0.3 / (1 + step)
        stepper.step(rows[start:start + batch], learning_rate)
        loss, W_ref, b_ref, velocity_W, velocity_b, accumulator_W, accumulator_b = oracle.sgd_step(
            model, X[batch_rows], y[batch_rows], W_ref, b_ref, velocity_W, velocity_b, learning_rate=learning_rate,
            sample_weight=None if weights is None else weights[batch_rows], accumulator_W=accumulator_W,
            accumulator_b=accumulator_b, step_count=step + 1, **options)
        expected_loss_sum += loss * len(batch_rows)  # the mean (1/B) Σ w_i ℓ_i back to the sum
    state = stepper.get_state()
    # The buffers an optimizer keeps (the oracle's velocity of plain SGD is g itself; the backends keep none).
    expected_state = {}
    if options.get("momentum") or options.get("optimizer") == "adam":
        expected_state.update(velocity_W=velocity_W, velocity_b=velocity_b)
    if options.get("optimizer") in ("adagrad", "adam"):
        expected_state.update(accumulator_W=accumulator_W, accumulator_b=accumulator_b)
    assert int(state["step_count"]) == 20
    for name, expected in expected_state.items():
        assert state[name].shape == expected.shape, name
        assert_close(state[name], expected, dtype, 20 * max(d, batch), name)
    W_out, b_out = stepper.get_params()
    assert W_out.shape == (d, c) and b_out.shape == (c,)
    # Twenty steps compound rounding: one dtype rounding per step on top of each step's reduction.
    assert_close(W_out, W_ref, dtype, 20 * max(d, batch), "W after 20 steps")
    assert_close(b_out, b_ref, dtype, 20 * batch, "b after 20 steps")
    assert_close(stepper.pop_loss_sum(), expected_loss_sum, dtype, 20 * d * batch, "summed loss")
    assert stepper.pop_loss_sum() == 0.0, "pop_loss_sum resets the accumulator"
    if not options.get("fit_intercept", True):
        np.testing.assert_array_equal(b_out, b)
    return W_out, W_ref


def twenty_fused_steps_match_twenty_oracle_steps(backend, rng, dtype, model, n, d, c, batch, l2, momentum, nesterov,
                                                  fit_intercept, weighted):
    run_twenty_steps(backend, rng, dtype, model, n, d, c, batch, weighted, l2=l2, momentum=momentum,
                     nesterov=nesterov, fit_intercept=fit_intercept)


def twenty_fused_steps_with_options_match_the_oracle(backend, rng, dtype, model, n, d, c, batch, options, weighted):
    W_out, W_ref = run_twenty_steps(backend, rng, dtype, model, n, d, c, batch, weighted, **options)
    if options.get("l1"):
        if not options.get("momentum"):
            assert (W_ref == 0).any(), "the case should drive some weights to exactly 0"
        # Where the oracle's weight is 0 the backend's is 0 too, or within one rounding of the threshold.
        assert_close(W_out[W_ref == 0], 0.0, dtype, 20 * max(d, batch), "weights the L1 step zeroed")


ROUND_TRIP_OPTIONS = [dict(momentum=0.9, l1=0.01), dict(optimizer="adagrad", l2=1e-2, l1=0.01),
                      dict(optimizer="adam", l2=1e-2, l1=0.01)]


def get_state_set_state_round_trip_resumes_bitwise(backend, rng, dtype, options):
    """Ten steps, the state through the host into a fresh step, ten more: bitwise the twenty steps of one run."""
    X, y, W, b = random_problem(rng, 40, 7, 3, dtype)
    rows = backend.asarray(rng.permutation(40))

    def build():
        return backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=8,
                                 **options)

    def run(stepper, steps):
        for step in steps:
            start = (step * 8) % 40
            stepper.step(rows[start:start + 8], 0.3 / (1 + step))

    straight = build()
    run(straight, range(20))
    first = build()
    run(first, range(10))
    state = first.get_state()
    assert set(state) >= {"W", "b", "velocity_W", "velocity_b", "accumulator_W", "accumulator_b", "step_count"}
    assert int(state["step_count"]) == 10
    buffers = {"adagrad": ["accumulator_W"], "adam": ["velocity_W", "accumulator_W"]}.get(options.get("optimizer"),
                                                                                          ["velocity_W"])
    for buffer in buffers:
        assert np.abs(state[buffer]).max() > 0, f"{buffer} carries the optimizer's state"
    resumed = build()
    resumed.set_state({name: value.copy() for name, value in state.items()})
    run(resumed, range(10, 20))
    for name, value in straight.get_state().items():
        assert value.tobytes() == resumed.get_state()[name].tobytes(), name
    # A state from before the accumulators existed (no accumulator keys) still loads, with zeros for them.
    legacy = build()
    legacy.set_state({name: state[name] for name in ("W", "b", "velocity_W", "velocity_b")})
    assert not legacy.get_state()["accumulator_W"].any() and int(legacy.get_state()["step_count"]) == 0


def unknown_optimizer_and_momentum_with_adagrad_are_rejected(backend, rng, dtype):
    X, y, W, b = random_problem(rng, 10, 5, 3, dtype)
    with pytest.raises(ValueError, match="optimizer"):
        backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=4,
                          optimizer="rmsprop")
    with pytest.raises(ValueError, match="momentum"):
        backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=4,
                          optimizer="adagrad", momentum=0.9)


def set_params_overwrites_weights_and_clears_momentum(backend, rng, dtype):
    X, y, W, b = random_problem(rng, 20, 5, 3, dtype)
    stepper = backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=20,
                                momentum=0.9)
    all_rows = backend.asarray(np.arange(20))
    stepper.step(all_rows, 0.1)
    stepper.set_params(W, b)
    stepper.step(all_rows, 0.1)  # with the velocity cleared this is one plain step from (W, b)
    _, W_ref, b_ref, _, _ = oracle.sgd_step("softmax", X, y, W, b, np.zeros_like(W), np.zeros_like(b),
                                            learning_rate=0.1, momentum=0.9)
    W_out, b_out = stepper.get_params()
    assert_close(W_out, W_ref, dtype, 20, "W")
    assert_close(b_out, b_ref, dtype, 20, "b")


def sample_weight_of_the_wrong_length_is_rejected(backend, rng, dtype):
    """Checked once when the step is built: the step's row gather would otherwise read past the weights."""
    X, y, W, b = random_problem(rng, 10, 5, 3, dtype)
    with pytest.raises(ValueError, match="sample_weight"):
        backend.fused_sgd("softmax", backend.asarray(X), backend.asarray(y), W, b, max_batch_size=4,
                          sample_weight=backend.asarray(np.ones(9, dtype)))
    with pytest.raises(ValueError, match="sample_weight"):
        backend.softmax_loss_grad(backend.asarray(X), backend.asarray(y), W, b,
                                  sample_weight=backend.asarray(np.ones(11, dtype)))


def a_batch_of_zero_weights_makes_no_step(backend, rng, dtype, model):
    """The mean divides by B, not by Σ w: a batch whose weights are all 0 has zero loss and gradient, not 0/0."""
    n_outputs = 3 if model == "softmax" else 1
    X, y, W, b = random_problem(rng, 10, 5, n_outputs, dtype)
    weights = np.ones(10, dtype)
    weights[:4] = 0
    stepper = backend.fused_sgd(model, backend.asarray(X), backend.asarray(y % 2 if model == "sigmoid" else y), W, b,
                                max_batch_size=4, momentum=0.9, sample_weight=backend.asarray(weights))
    stepper.step(backend.asarray(np.arange(4)), 0.5)
    W_out, b_out = stepper.get_params()
    np.testing.assert_array_equal(W_out, W)
    np.testing.assert_array_equal(b_out, b)
    assert stepper.pop_loss_sum() == 0.0
