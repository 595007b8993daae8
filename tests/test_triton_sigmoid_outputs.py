"""The Triton backend's sigmoid models with K outputs and either loss, against the float64 oracle.

Runs under the Triton interpreter on a CPU-only machine. Covered: binary (K = 1, ``w`` (D,)), K = 3 and 37 (one
output column at a time over the resident X tile), K = 1000 on few rows (tl.dot output tiles, K padded with masked
columns), D = 1100 (past the resident tile: X streamed), both losses (``"sigmoid"``: BCE from logits,
``"sigmoid_mse"``: squared error), every input dtype, odd B and D, sample weights, logits of ±1e4, atomics and the
deterministic mode (bitwise the same run to run), and 20 fused steps against ``oracle.sgd_step``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Triton backend needs torch")
# linclass_gpu.kernels imports triton itself, after choosing its mode (the interpreter when there is no CUDA device).
pytest.importorskip("linclass_gpu.kernels", reason="the Triton backend needs triton")

from helpers import random_features  # noqa: E402
from tolerances import assert_close  # noqa: E402

from linclass_gpu import oracle  # noqa: E402
from linclass_gpu.backends.triton_backend import TritonBackend  # noqa: E402
from linclass_gpu.kernels import sigmoid_sgd  # noqa: E402

DTYPES = ("float32", "bfloat16", "float16", "uint8")
MODELS = ("sigmoid", "sigmoid_mse")
ORACLE_LOSS_GRAD = {"sigmoid": oracle.sigmoid_loss_grad, "sigmoid_mse": oracle.sigmoid_mse_loss_grad}
# (B, D, K): odd B and D; K = 1 is given as w (D,) and y (N,), the binary shapes. (3, 45, 1000) streams X through 16
# output tiles of 64 (the last one 40 wide); D = 1100 streams X through the column path (K = 1) and a 16-wide tile.
SHAPES = [(17, 31, 1), (17, 31, 3), (5, 33, 37), (3, 45, 1000), (3, 1100, 1), (3, 1100, 5)]


def shape_id(shape):
    return "B{}-D{}-K{}".format(*shape)


@pytest.fixture(scope="module")
def fast_backend():
    return TritonBackend()


@pytest.fixture(scope="module")
def deterministic_backend():
    return TritonBackend(deterministic=True)


def features(backend, rng, n_rows, n_features, dtype):
    """X on the device in ``dtype``, the float64 values the kernel sees (already rounded), and the input scale."""
    X, x_scale = random_features(rng, n_rows, n_features, dtype)
    X = backend.asarray(X)
    return X, X.to(torch.float64).cpu().numpy(), x_scale


def problem(backend, rng, shape, dtype):
    """Inputs, {0, 1} targets and parameters; K = 1 in the binary shapes ``y`` (N,), ``w`` (D,), scalar ``b``."""
    n_rows, n_features, n_outputs = shape
    X, X64, x_scale = features(backend, rng, n_rows, n_features, dtype)
    Y = rng.integers(0, 2, size=(n_rows, n_outputs))
    W = (rng.normal(size=(n_features, n_outputs)) / np.sqrt(n_features)).astype(np.float32)
    b = rng.normal(size=n_outputs).astype(np.float32)
    if n_outputs == 1:
        return X, X64, x_scale, Y[:, 0], W[:, 0], b[0]
    return X, X64, x_scale, Y, W, b


def check_loss_grad(backend, model, X, X64, x_scale, Y, W, b, dtype, sample_weight=None):
    """The backend's loss and gradients against the oracle, in the oracle's shapes; returns them on the host."""
    loss_grad = backend.sigmoid_loss_grad if model == "sigmoid" else backend.sigmoid_mse_loss_grad
    weights = None if sample_weight is None else backend.asarray(sample_weight)
    loss, dW, db = loss_grad(X, backend.asarray(Y), W, b, x_scale, weights)
    dW, db = backend.to_numpy(dW), backend.to_numpy(db)
    expected = ORACLE_LOSS_GRAD[model](X64, Y, np.asarray(W, np.float64), np.asarray(b, np.float64), x_scale,
                                           sample_weight)
    n_rows, n_features = X64.shape
    assert isinstance(loss, float) and dW.shape == np.shape(W) and db.shape == np.shape(b)
    # A row's loss sums K outputs, each from a D-long logit reduction; dW and db reduce over the B rows.
    assert_close(loss, expected[0], dtype, n_features * np.size(b), f"{model} loss")
    assert_close(dW, expected[1], dtype, n_rows, f"{model} dW")
    assert_close(db, expected[2], dtype, n_rows, f"{model} db")
    return loss, dW, db


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_loss_grad_matches_oracle(fast_backend, shape, dtype, model, rng):
    X, X64, x_scale, Y, W, b = problem(fast_backend, rng, shape, dtype)
    check_loss_grad(fast_backend, model, X, X64, x_scale, Y, W, b, dtype)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_deterministic_mode_with_sample_weights_is_bitwise_reproducible(deterministic_backend, shape, model, rng):
    """Weighted rows (some weigh 0) in deterministic mode: within the table of the oracle, and bitwise the same when
    run again."""
    X, X64, x_scale, Y, W, b = problem(deterministic_backend, rng, shape, "uint8")
    weights = rng.uniform(0.0, 3.0, size=shape[0]).astype(np.float32)
    weights[::4] = 0.0
    first = check_loss_grad(deterministic_backend, model, X, X64, x_scale, Y, W, b, "uint8", weights)
    again = check_loss_grad(deterministic_backend, model, X, X64, x_scale, Y, W, b, "uint8", weights)
    assert first[0] == again[0]
    assert first[1].tobytes() == again[1].tobytes() and first[2].tobytes() == again[2].tobytes()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(17, 31, 3), (3, 31, 100)], ids=shape_id)
def test_logits_of_1e4_stay_finite(fast_backend, shape, dtype, model, rng):
    """Logits of about ±1e4 that fp32 holds exactly (small integer X times integer W), half of them confidently
    wrong: BCE from logits is ~|z| and finite, the squared error 0 or 1 with a vanishing gradient; no NaN, no inf."""
    n_rows, n_features, n_outputs = shape
    values = rng.integers(0 if dtype == "uint8" else -3, 4, size=(n_rows, n_features))
    X = fast_backend.asarray(torch.from_numpy(values.astype(np.float32)).to(getattr(torch, dtype)))
    W = rng.integers(-1000, 1001, size=(n_features, n_outputs)).astype(np.float32)
    b = rng.integers(-10, 11, size=n_outputs).astype(np.float32)
    assert np.abs(values @ W).max() > 5e3
    Y = rng.integers(0, 2, size=(n_rows, n_outputs))
    loss, dW, db = check_loss_grad(fast_backend, model, X, values.astype(np.float64), 1.0, Y, W, b, dtype)
    assert np.isfinite(loss) and np.isfinite(dW).all() and np.isfinite(db).all()
    probabilities = fast_backend.to_numpy(fast_backend.predict_proba(model, X, W, b))
    assert_close(probabilities, oracle.sigmoid(values @ W.astype(np.float64) + b), dtype, n_features, "probabilities")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(17, 31, 1), (5, 33, 37), (3, 45, 1000)], ids=shape_id)
def test_probabilities(fast_backend, shape, dtype, rng):
    """σ(z) from the fused kernel: (N,) for one output, (N, K) for K."""
    X, X64, x_scale, _, W, b = problem(fast_backend, rng, shape, dtype)
    probabilities = fast_backend.to_numpy(fast_backend.predict_proba("sigmoid_mse", X, W, b, x_scale))
    expected = oracle.sigmoid(x_scale * X64 @ np.asarray(W, np.float64) + b)
    assert probabilities.shape == expected.shape
    assert_close(probabilities, expected, dtype, shape[1], "probabilities")


STEP_OPTIONS = [
    dict(l2=1e-2, momentum=0.9),
    dict(l2=1e-3, l1=1e-2, momentum=0.5, nesterov=True),
    dict(l2=1e-3, l1=1e-2, optimizer="adam"),
]


@pytest.mark.parametrize("options", STEP_OPTIONS, ids=("l2-momentum", "elastic-net-nesterov", "adam-elastic-net"))
@pytest.mark.parametrize("model", MODELS)
def test_twenty_fused_steps_match_oracle(fast_backend, model, options, rng):
    """K = 5 outputs, uint8 pixels, weighted rows: 4 epochs of 5 steps (the last a 6-row tail) against sgd_step."""
    n_rows, n_features, n_outputs, batch_size, learning_rate = 70, 31, 5, 16, 0.5
    X = rng.integers(0, 256, size=(n_rows, n_features), dtype=np.uint8)
    Y = rng.integers(0, 2, size=(n_rows, n_outputs))
    W0 = (rng.normal(size=(n_features, n_outputs)) * 0.1).astype(np.float32)
    b0 = (rng.normal(size=n_outputs) * 0.1).astype(np.float32)
    weights = rng.uniform(0.0, 2.0, size=n_rows).astype(np.float32)
    orders = [rng.permutation(n_rows) for _ in range(4)]
    stepper = fast_backend.fused_sgd(model, fast_backend.asarray(X), fast_backend.asarray(Y), W0, b0,
                                     max_batch_size=batch_size, x_scale=1 / 255, sample_weight=weights, **options)
    assert stepper.n_outputs == n_outputs
    X64, W, b = X.astype(np.float64), W0.astype(np.float64), b0.astype(np.float64)
    velocity_W, velocity_b, sums_W, sums_b = np.zeros_like(W), np.zeros_like(b), np.zeros_like(W), np.zeros_like(b)
    steps = 0
    for order in orders:
        rows, expected_loss_sum = fast_backend.asarray(order), 0.0
        for start in range(0, n_rows, batch_size):
            stepper.step(rows[start:start + batch_size], learning_rate)
            batch, steps = order[start:start + batch_size], steps + 1
            loss, W, b, velocity_W, velocity_b, sums_W, sums_b = oracle.sgd_step(
                model, X64[batch], Y[batch], W, b, velocity_W, velocity_b, learning_rate=learning_rate,
                x_scale=1 / 255, sample_weight=weights[batch], accumulator_W=sums_W, accumulator_b=sums_b,
                step_count=steps, **options)
            expected_loss_sum += loss * len(batch)
        assert_close(stepper.pop_loss_sum(), expected_loss_sum, "uint8", n_rows * n_features * n_outputs,
                     "epoch loss sum")
    assert steps == 20
    W_t, b_t = stepper.get_params()
    assert_close(W_t, W, "uint8", steps * batch_size, "W after 20 steps")
    assert_close(b_t, b, "uint8", steps * batch_size, "b after 20 steps")


def test_deterministic_fused_steps_are_bitwise_reproducible(deterministic_backend, rng):
    X = rng.integers(0, 256, size=(40, 31), dtype=np.uint8)
    Y = rng.integers(0, 2, size=(40, 5))
    W0, b0 = (rng.normal(size=(31, 5)) * 0.1).astype(np.float32), np.zeros(5, np.float32)
    rows = deterministic_backend.asarray(rng.permutation(40))

    def run():
        stepper = deterministic_backend.fused_sgd("sigmoid_mse", deterministic_backend.asarray(X),
                                                  deterministic_backend.asarray(Y), W0, b0, max_batch_size=32,
                                                  x_scale=1 / 255, momentum=0.9)
        for start in (0, 32):
            stepper.step(rows[start:start + 32], 0.5)
        return stepper.get_params(), stepper.pop_loss_sum()

    (W1, b1), loss1 = run()
    (W2, b2), loss2 = run()
    assert W1.tobytes() == W2.tobytes() and b1.tobytes() == b2.tobytes() and loss1 == loss2
    assert not np.array_equal(W1, W0)


def test_targets_are_checked_before_any_work(fast_backend, rng):
    X = fast_backend.asarray(rng.normal(size=(6, 4)).astype(np.float32))
    W, b = np.zeros((4, 3), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="do not fit a model with 3 outputs"):
        fast_backend.fused_sgd("sigmoid", X, fast_backend.asarray(np.zeros((6, 2))), W, b, max_batch_size=4)
    with pytest.raises(ValueError, match="do not fit a model with 3 outputs"):
        fast_backend.sigmoid_loss_grad(X, fast_backend.asarray(np.zeros(6)), W, b)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        fast_backend.sigmoid_mse_loss_grad(X, fast_backend.asarray(np.full((6, 3), 0.5)), W, b)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        fast_backend.fused_sgd("sigmoid_mse", X, fast_backend.asarray(np.full((6, 3), 2)), W, b, max_batch_size=4)
    with pytest.raises(ValueError, match="model"):
        fast_backend.predict_proba("hinge", X, W, b)


@pytest.mark.parametrize(("config_shape", "message"), [((31, 3), "holds 32 features of X resident, X has 100"),
                                                       ((100, 2), "column path holds 2 outputs, the model has 3")])
def test_launch_rejects_a_config_made_for_another_shape(config_shape, message):
    """A config for fewer features or outputs would silently drop the rest: the launcher refuses it."""
    n_rows, n_features, n_outputs = 4, 100, 3
    theta = torch.zeros(n_features * n_outputs + n_outputs)
    with pytest.raises(ValueError, match=message):
        sigmoid_sgd.launch_sigmoid_sgd(
            torch.zeros(n_rows, n_features), torch.arange(n_rows), torch.zeros(n_rows, n_outputs, dtype=torch.uint8),
            theta, torch.zeros_like(theta), torch.zeros(1, dtype=torch.float64), x_scale=1.0, grad_scale=0.25,
            config=sigmoid_sgd.sigmoid_config(*config_shape), n_outputs=n_outputs)
