"""The float64 oracle against independent truths: finite differences, a worked example, identities, hand-unrolled SGD.

Everything else is tested against the oracle, so nothing here compares the oracle with itself in another form.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from linclass_gpu import oracle

# Central differences in float64 with this step have truncation error ~h²·f''' and rounding error ~eps·|f|/h, both
# ~1e-11 for these O(1) losses: four orders of magnitude below the 1e-7 the gradients must meet.
FD_STEP = 1e-5
FD_RTOL = 1e-7
FD_ATOL = 1e-10  # floor for gradient entries that are ~0, where a relative error means nothing

# Beyond float64's exp range in both directions (e^{±1000} overflows / underflows), plus the moderate range.
EXTREME_LOGITS = np.array([-1e4, -1000.0, -745.0, -50.0, -1.0, 0.0, 1.0, 50.0, 745.0, 1000.0, 1e4])

# Every loss with its parameter layout: softmax has W (D, C), b (C,) and class ids; the sigmoid models have
# w (D,), a scalar b and {0, 1} targets.
LOSS_GRADS = {
    "softmax": oracle.softmax_loss_grad,
    "sigmoid": oracle.sigmoid_loss_grad,
    "sigmoid_mse": oracle.sigmoid_mse_loss_grad,
}


def random_problem(loss_name, n_rows, n_features, n_classes, seed=0):
    """``X, y, W, b`` for ``loss_name``, with logits of order 1 so no probability saturates."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    if loss_name == "softmax":
        W, b = rng.normal(size=(n_features, n_classes)), rng.normal(size=n_classes)
        return X, rng.integers(0, n_classes, n_rows), W, b
    return X, rng.integers(0, 2, n_rows), rng.normal(size=n_features), np.float64(rng.normal())


def random_weights(n_rows, seed=2):
    """Sample weights in [0, 3) with the first row's weight 0 (a row that must drop out)."""
    weights = np.random.default_rng(seed).uniform(0, 3, size=n_rows)
    weights[0] = 0.0
    return weights


def central_difference(loss_of, param):
    """``∂loss_of(param)/∂param`` by ``(f(p + h e_k) − f(p − h e_k)) / 2h`` for every entry ``k`` of ``param``."""
    param = np.array(param, dtype=np.float64)
    gradient = np.zeros_like(param)
    for index in np.ndindex(param.shape):
        plus, minus = param.copy(), param.copy()
        plus[index] += FD_STEP
        minus[index] -= FD_STEP
        gradient[index] = (loss_of(plus) - loss_of(minus)) / (2 * FD_STEP)
    return gradient


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("loss_name", LOSS_GRADS)
@pytest.mark.parametrize(
    ("n_rows", "n_features", "n_classes", "x_scale"),
    [(6, 4, 3, 1.0), (1, 3, 4, 1.0), (5, 1, 2, 1.0), (8, 3, 2, 1.0), (7, 5, 3, 0.25)],
)
def test_gradients_match_central_differences(loss_name, n_rows, n_features, n_classes, x_scale, weighted):
    loss_grad = LOSS_GRADS[loss_name]
    X, y, W, b = random_problem(loss_name, n_rows, n_features, n_classes)
    weights = random_weights(n_rows) if weighted else None
    _, dW, db = loss_grad(X, y, W, b, x_scale, weights)

    np.testing.assert_allclose(
        dW, central_difference(lambda W_: loss_grad(X, y, W_, b, x_scale, weights)[0], W), rtol=FD_RTOL,
        atol=FD_ATOL,
    )
    np.testing.assert_allclose(
        db, central_difference(lambda b_: loss_grad(X, y, W, b_, x_scale, weights)[0], b), rtol=FD_RTOL,
        atol=FD_ATOL,
    )
    assert np.shape(dW) == np.shape(W) and np.shape(db) == np.shape(b)


@pytest.mark.parametrize("loss_name", LOSS_GRADS)
def test_weights_of_one_are_no_weights(loss_name):
    X, y, W, b = random_problem(loss_name, 7, 4, 3)
    unweighted = LOSS_GRADS[loss_name](X, y, W, b, 0.5)
    for actual, expected in zip(LOSS_GRADS[loss_name](X, y, W, b, 0.5, np.ones(7)), unweighted):
        np.testing.assert_array_equal(actual, expected)  # 1·x is exact: bitwise the same


@pytest.mark.parametrize("loss_name", LOSS_GRADS)
def test_integer_weights_equal_repeated_rows(loss_name):
    # Weight k counts row i k times: (1/N) Σ w_i ℓ_i over N rows is (M/N) times the mean over the M = Σ w_i rows of
    # the repeated data set. Weight 0 drops the row.
    X, y, W, b = random_problem(loss_name, 6, 4, 3)
    weights = np.array([0, 1, 2, 3, 1, 2])
    repeated = np.repeat(np.arange(6), weights)
    expected = LOSS_GRADS[loss_name](X[repeated], y[repeated], W, b, 0.5)
    actual = LOSS_GRADS[loss_name](X, y, W, b, 0.5, weights)
    for name, got, want in zip(("loss", "dW", "db"), actual, expected):
        np.testing.assert_allclose(np.multiply(got, 6 / len(repeated)), want, rtol=1e-13, atol=1e-16, err_msg=name)


def test_weighted_losses_reject_a_wrong_number_of_weights():
    X, y, W, b = random_problem("softmax", 5, 2, 3)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        oracle.softmax_loss_grad(X, y, W, b, sample_weight=np.ones(4))


def test_lecture_worked_example():
    # Softmax outputs and one-hot targets of the lecture notes; logits log(P) reproduce P up to the 4-decimal
    # rounding of the printed rows (which is why P sums to 1 only within 1e-4).
    P = np.array(
        [
            [0.3792, 0.3104, 0.3104],
            [0.3072, 0.4147, 0.2780],
            [0.4263, 0.2248, 0.3490],
            [0.2668, 0.2978, 0.4354],
        ]
    )
    Y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    y = Y.argmax(axis=1)
    Z = np.log(P)

    np.testing.assert_allclose(oracle.softmax(Z), P, atol=1e-4)
    assert round(oracle.cross_entropy(Z, y), 4) == 0.9335
    # The same logits as the output of a linear model (X = I, W = Z, b = 0) give the same loss, and db = mean(P − Y).
    loss, dW, db = oracle.softmax_loss_grad(np.eye(4), y, Z, np.zeros(3))
    assert round(loss, 4) == 0.9335
    np.testing.assert_allclose(db, (P - Y).mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(dW, (P - Y) / 4, atol=1e-4)


def test_sigmoid_symmetry_and_derivative():
    z = np.concatenate([EXTREME_LOGITS, np.linspace(-30, 30, 121)])
    sigma = oracle.sigmoid(z)

    assert np.all((sigma >= 0) & (sigma <= 1))
    assert oracle.sigmoid(0.0) == 0.5
    # 1 − σ(z) is only as exact as one rounding near 1, so the identity holds to eps absolute, not relative.
    np.testing.assert_allclose(oracle.sigmoid(-z), 1 - sigma, rtol=0, atol=np.finfo(np.float64).eps)
    numerical_derivative = (oracle.sigmoid(z + FD_STEP) - oracle.sigmoid(z - FD_STEP)) / (2 * FD_STEP)
    # Each σ(z ± h) is rounded to eps·σ ≤ eps, so the difference quotient carries up to ~eps/h absolute error.
    np.testing.assert_allclose(
        sigma * (1 - sigma), numerical_derivative, rtol=1e-8, atol=2 * np.finfo(np.float64).eps / FD_STEP
    )


def test_extreme_logits_stay_finite_and_exact():
    # Overflow, 0·inf and log(0) would all raise here; underflow of e^{−1000} to 0 is expected and harmless.
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        z = EXTREME_LOGITS
        sigma = oracle.sigmoid(z)
        assert np.all(np.isfinite(sigma))
        np.testing.assert_array_equal(sigma[[0, 1, -2, -1]], [0.0, 0.0, 1.0, 1.0])

        # X = I makes the logits equal to the weights, so each row gets exactly one extreme logit.
        identity = np.eye(len(z))
        for loss_name in ("sigmoid", "sigmoid_mse"):
            for label in (0, 1):
                loss, dw, db = LOSS_GRADS[loss_name](identity, np.full(len(z), label), z, 0.0)
                assert np.isfinite(loss) and np.all(np.isfinite(dw)) and np.isfinite(db)

        # BCE of z = ±1e4 against the wrong label is |z| exactly; against the right one, 0.
        assert oracle.binary_cross_entropy_with_logits([1e4, -1e4], [0, 1]) == 1e4
        assert oracle.binary_cross_entropy_with_logits([1e4, -1e4], [1, 0]) == 0.0
        # A confident right answer still costs log(1 + e^{−50}) ≈ e^{−50}, which 1 + e^{−50} would round away.
        assert oracle.binary_cross_entropy_with_logits([50.0], [1]) == pytest.approx(np.exp(-50.0), rel=1e-12)

        Z = np.array([[1e4, -1e4, 0.0], [-1000.0, 1000.0, 1000.0], [0.0, 0.0, -1e4]])
        probabilities = oracle.softmax(Z)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-15)
        np.testing.assert_allclose(probabilities, [[1, 0, 0], [0, 0.5, 0.5], [0.5, 0.5, 0]], rtol=0, atol=1e-15)
        for y in ([0, 1, 2], [1, 0, 0]):
            loss, dW, db = oracle.softmax_loss_grad(np.eye(3), y, Z, np.zeros(3))
            assert np.isfinite(loss) and np.all(np.isfinite(dW)) and np.all(np.isfinite(db))
        # −log softmax of a class behind the row max by a gap g (shared by k tied classes) is g + log k.
        assert oracle.cross_entropy(Z, [1, 0, 2]) == pytest.approx((2e4 + (2000 + np.log(2)) + (1e4 + np.log(2))) / 3)


def test_padded_class_column_of_minus_inf_is_ignored():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(5, 3))
    padded = np.hstack([Z, np.full((5, 2), -np.inf)])
    np.testing.assert_allclose(oracle.softmax(padded), np.hstack([oracle.softmax(Z), np.zeros((5, 2))]), rtol=1e-15)
    assert oracle.cross_entropy(padded, [0, 1, 2, 0, 1]) == pytest.approx(oracle.cross_entropy(Z, [0, 1, 2, 0, 1]))


def test_mse_gradient_vanishes_for_saturated_wrong_predictions_but_bce_does_not():
    X = np.array([[1.0], [1.0]])
    w = np.array([50.0])  # σ(50) = 1 − 2e−22: confidently predicts 1
    y = np.array([0, 0])  # and is wrong on both rows
    _, dw_mse, _ = oracle.sigmoid_mse_loss_grad(X, y, w, 0.0)
    _, dw_bce, _ = oracle.sigmoid_loss_grad(X, y, w, 0.0)
    assert abs(dw_mse[0]) < 1e-20
    assert dw_bce[0] == pytest.approx(1.0)


@pytest.mark.parametrize("x_scale", [1.0, 0.5])
def test_binary_model_equals_two_class_softmax(x_scale):
    # σ(z) = e^z / (e^0 + e^z): class 0 with logit 0 and class 1 with logit z is the binary model.
    X, y, w, b = random_problem("sigmoid", 9, 4, 2, seed=3)
    W2 = np.column_stack([np.zeros_like(w), w])
    b2 = np.array([0.0, b])

    z = x_scale * X @ w + b
    np.testing.assert_allclose(oracle.softmax(x_scale * X @ W2 + b2)[:, 1], oracle.sigmoid(z), rtol=1e-14)
    loss, dw, db = oracle.sigmoid_loss_grad(X, y, w, b, x_scale)
    loss2, dW2, db2 = oracle.softmax_loss_grad(X, y, W2, b2, x_scale)
    assert loss2 == pytest.approx(loss, rel=1e-14)
    # P − Y for the two columns is (−(σ − y), σ − y), so the class-0 gradients are the negated binary ones.
    np.testing.assert_allclose(dW2, np.column_stack([-dw, dw]), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(db2, [-db, db], rtol=1e-13, atol=1e-16)


def sgd_problem(model, seed=5):
    """A minibatch and parameters in the ``sgd_step`` layout: ``W`` (D, K), ``b`` (K,), K = 3 or 1."""
    n_outputs = 3 if model == "softmax" else 1
    X, y, _, _ = random_problem(model, 6, 4, n_outputs, seed)
    rng = np.random.default_rng(seed + 1)
    return X, y, rng.normal(size=(4, n_outputs)), rng.normal(size=n_outputs)


def data_gradients(model, X, y, W, b, x_scale=1.0, sample_weight=None):
    """Loss, ``dW`` (D, K) and ``db`` (K,) of the data term, in the ``sgd_step`` layout."""
    if model == "softmax":
        return oracle.softmax_loss_grad(X, y, W, b, x_scale, sample_weight)
    loss, dw, db = oracle.sigmoid_loss_grad(X, y, W[:, 0], b[0], x_scale, sample_weight)
    return loss, dw[:, None], np.array([db])


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_plain_sgd_step_is_gradient_plus_l2_on_weights_only(model, weighted):
    X, y, W, b = sgd_problem(model)
    weights = random_weights(len(y)) if weighted else None
    inputs = [a.copy() for a in (X, y, W, b)]
    lr, l2, x_scale = 0.3, 0.7, 0.5
    data_loss, dW, db = data_gradients(model, X, y, W, b, x_scale, weights)

    loss, W1, b1, velocity_W, velocity_b = oracle.sgd_step(
        model, X, y, W, b, np.zeros_like(W), np.zeros_like(b), learning_rate=lr, l2=l2, x_scale=x_scale,
        sample_weight=weights,
    )
    assert loss == data_loss  # before the update, without the penalty
    np.testing.assert_allclose(W1, W - lr * (dW + l2 * W), rtol=1e-15)
    np.testing.assert_allclose(b1, b - lr * db, rtol=1e-15)  # never penalised
    np.testing.assert_allclose(velocity_W, dW + l2 * W, rtol=1e-15)
    np.testing.assert_allclose(velocity_b, db, rtol=1e-15)
    for before, after in zip(inputs, (X, y, W, b)):
        np.testing.assert_array_equal(before, after)  # pure: inputs untouched


@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_fit_intercept_false_leaves_bias_and_its_velocity(model):
    X, y, W, b = sgd_problem(model)
    velocity_W, velocity_b = np.ones_like(W), np.ones_like(b)
    kwargs = dict(learning_rate=0.1, l2=0.2, momentum=0.9)
    _, W_fit, _, _, _ = oracle.sgd_step(model, X, y, W, b, velocity_W, velocity_b, **kwargs)
    _, W_fixed, b_fixed, _, velocity_b_fixed = oracle.sgd_step(
        model, X, y, W, b, velocity_W, velocity_b, fit_intercept=False, **kwargs
    )
    np.testing.assert_array_equal(b_fixed, b)
    np.testing.assert_array_equal(velocity_b_fixed, velocity_b)
    assert b_fixed is not b
    np.testing.assert_array_equal(W_fixed, W_fit)


@pytest.mark.parametrize(
    ("nesterov", "expected_W"),
    [
        # lr = μ = 1/2, λ = 1, X = 0 so g = W:  v ← v/2 + W;  W ← W − v/2  (heavy ball)
        # W: 1 → 1 − 1/2·1 = 1/2 → 1/2 − 1/2·(1/2 + 1/2) = 0 → 0 − 1/2·(1/2 + 0) = −1/4
        (False, [0.5, 0.0, -0.25]),
        # Nesterov: W ← W − (W + v/2)/2 with the new v
        # v=1: W = 1 − (1 + 1/2)/2 = 1/4;  v = 1/2 + 1/4 = 3/4: W = 1/4 − (1/4 + 3/8)/2 = −1/16;
        # v = 3/8 − 1/16 = 5/16: W = −1/16 − (−1/16 + 5/32)/2 = −7/64
        (True, [0.25, -0.0625, -0.109375]),
    ],
)
def test_momentum_by_hand_on_pure_l2(nesterov, expected_W):
    # With X = 0 the data gradient of W is 0 and g_W = λ W, so the three steps can be worked out in exact fractions.
    X, y = np.zeros((2, 1)), np.array([0, 1])
    W, b = np.ones((1, 1)), np.zeros(1)  # σ(0) − y averages to 0 over y = (0, 1): b stays 0
    velocity_W, velocity_b = np.zeros_like(W), np.zeros_like(b)
    for expected in expected_W:
        _, W, b, velocity_W, velocity_b = oracle.sgd_step(
            "sigmoid", X, y, W, b, velocity_W, velocity_b, learning_rate=0.5, l2=1.0, momentum=0.5, nesterov=nesterov
        )
        assert W[0, 0] == expected
        assert b[0] == 0.0


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_momentum_three_steps_match_unrolled_velocity(model, nesterov):
    # v_k unrolled: v1 = g1, v2 = μ g1 + g2, v3 = μ² g1 + μ g2 + g3; the step is v_k, or g_k + μ v_k for Nesterov.
    X, y, W, b = sgd_problem(model, seed=8)
    lr, l2, mu = 0.2, 0.1, 0.9
    velocity_W, velocity_b = np.zeros_like(W), np.zeros_like(b)
    gradients_W, gradients_b = [], []
    for step_index in range(3):
        _, dW, db = data_gradients(model, X, y, W, b)
        gradients_W.append(dW + l2 * W)
        gradients_b.append(db)
        unrolled_W = sum(mu ** (step_index - j) * g for j, g in enumerate(gradients_W))
        unrolled_b = sum(mu ** (step_index - j) * g for j, g in enumerate(gradients_b))
        step_W = gradients_W[-1] + mu * unrolled_W if nesterov else unrolled_W
        step_b = gradients_b[-1] + mu * unrolled_b if nesterov else unrolled_b
        expected_W, expected_b = W - lr * step_W, b - lr * step_b

        _, W, b, velocity_W, velocity_b = oracle.sgd_step(
            model, X, y, W, b, velocity_W, velocity_b, learning_rate=lr, l2=l2, momentum=mu, nesterov=nesterov
        )
        np.testing.assert_allclose(velocity_W, unrolled_W, rtol=1e-14)
        np.testing.assert_allclose(velocity_b, unrolled_b, rtol=1e-14)
        np.testing.assert_allclose(W, expected_W, rtol=1e-14)
        np.testing.assert_allclose(b, expected_b, rtol=1e-14)


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="softmax"):
        oracle.sgd_step("tanh", np.zeros((1, 1)), [0], np.zeros((1, 1)), np.zeros(1), np.zeros((1, 1)), np.zeros(1),
                        learning_rate=0.1)


# -- L1 (proximal) and the elastic net --------------------------------------------------------------------------------


@pytest.mark.parametrize(("l2", "expected_W"), [
    # X = 0: no data gradient. lr = 1/2, λ₁ = 1/2: the threshold is lr·λ₁ = 1/4.
    # l2 = 0: W − 0 = W, then every |W| shrinks by 1/4; −1/4 and 1/8 reach 0 exactly.
    (0.0, [0.75, -0.75, 0.0, 0.0]),
    # l2 = 1: W − 1/2·W = W/2 = (1/2, −1/2, −1/8, 1/16), then shrink by 1/4: (1/4, −1/4, 0, 0). The elastic net.
    (1.0, [0.25, -0.25, 0.0, 0.0]),
])
def test_l1_step_by_hand(l2, expected_W):
    X, y = np.zeros((2, 4)), np.array([0, 1])
    W, b = np.array([[1.0], [-1.0], [-0.25], [0.125]]), np.array([0.0])
    _, W1, b1, velocity_W, _ = oracle.sgd_step("sigmoid", X, y, W, b, np.zeros_like(W), np.zeros_like(b),
                                               learning_rate=0.5, l2=l2, l1=0.5)
    np.testing.assert_array_equal(W1[:, 0], expected_W)
    np.testing.assert_array_equal(b1, [0.0])  # σ(0) − y averages to 0 over y = (0, 1)
    # A bias below the threshold is never thresholded: b = 1/8 makes the plain step 1/8 − (σ(1/8) − 1/2)/2 ≠ 0.
    _, _, b_small, _, _ = oracle.sgd_step("sigmoid", X, y, W, np.array([0.125]), np.zeros_like(W), np.zeros(1),
                                          learning_rate=0.5, l2=l2, l1=0.5)
    np.testing.assert_array_equal(b_small, [0.125 - 0.5 * (oracle.sigmoid(0.125) - 0.5)])
    np.testing.assert_array_equal(velocity_W, l2 * W)  # the velocity holds the smooth gradient only


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_l1_is_soft_thresholding_after_the_step_and_never_touches_the_bias(model, momentum):
    X, y, W, b = sgd_problem(model, seed=11)
    velocity_W, velocity_b = np.ones_like(W), np.ones_like(b)
    kwargs = dict(learning_rate=0.3, l2=0.1, momentum=momentum)
    loss0, W0, b0, vW0, vb0 = oracle.sgd_step(model, X, y, W, b, velocity_W, velocity_b, **kwargs)
    loss1, W1, b1, vW1, vb1 = oracle.sgd_step(model, X, y, W, b, velocity_W, velocity_b, l1=2.0, **kwargs)
    assert loss1 == loss0
    threshold = 0.3 * 2.0
    np.testing.assert_array_equal(W1, np.sign(W0) * np.maximum(np.abs(W0) - threshold, 0.0))
    assert (W1 == 0).any() and (W1 != 0).any()
    for before, after in ((b0, b1), (vW0, vW1), (vb0, vb1)):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_strong_l1_drives_every_weight_to_exactly_zero_and_keeps_it_there(model):
    # lr·|dW| ≤ lr·max|x| < lr·λ₁ once W = 0: the data gradient can no longer pull a weight off 0.
    X, y, W, b = sgd_problem(model, seed=12)
    X = np.clip(X, -1, 1)
    velocity_W, velocity_b = np.zeros_like(W), np.zeros_like(b)
    b_start = b.copy()
    for _ in range(30):
        _, W, b, velocity_W, velocity_b = oracle.sgd_step(model, X, y, W, b, velocity_W, velocity_b,
                                                          learning_rate=0.1, l1=1.5)
    assert (W == 0).all()
    assert not np.array_equal(b, b_start)  # the bias keeps learning


def test_zero_l1_is_exactly_the_step_without_it():
    X, y, W, b = sgd_problem("softmax", seed=13)
    zeros = (np.zeros_like(W), np.zeros_like(b))
    without = oracle.sgd_step("softmax", X, y, W, b, *zeros, learning_rate=0.3, l2=0.1, momentum=0.9)
    with_zero = oracle.sgd_step("softmax", X, y, W, b, *zeros, learning_rate=0.3, l2=0.1, l1=0.0, momentum=0.9)
    for a, b_ in zip(without[1:], with_zero[1:]):
        np.testing.assert_array_equal(a, b_)


# -- AdaGrad ----------------------------------------------------------------------------------------------------------


def test_adagrad_two_steps_by_hand():
    # X = 0, y = (0, 1): no data gradient for W or b, so g_W = λ W with λ = 1, and lr = 1/2.
    # Step 1: g = (1, −2), G = (1, 4), W ← W − lr·g/√G = (1 − 1/2, −2 + 1/2) = (1/2, −3/2).
    # Step 2: g = (1/2, −3/2), G = (5/4, 25/4), W ← (1/2 − (1/4)/√(5/4), −3/2 + (3/4)/(5/2)) = (…, −6/5).
    X, y = np.zeros((2, 2)), np.array([0, 1])
    W, b = np.array([[1.0], [-2.0]]), np.zeros(1)
    zeros = (np.zeros_like(W), np.zeros_like(b))
    state = (W, b, *zeros, *zeros)
    for expected_W, expected_G in (([0.5, -1.5], [1.0, 4.0]), ([0.5 - 0.25 / np.sqrt(1.25), -1.2], [1.25, 6.25])):
        _, W, b, velocity_W, velocity_b, G_W, G_b = oracle.sgd_step(
            "sigmoid", X, y, state[0], state[1], state[2], state[3], learning_rate=0.5, l2=1.0, optimizer="adagrad",
            accumulator_W=state[4], accumulator_b=state[5])
        np.testing.assert_allclose(W[:, 0], expected_W, rtol=1e-9)  # ε = 1e-10 shifts the last digits only
        np.testing.assert_allclose(G_W[:, 0], expected_G, rtol=1e-9)
        np.testing.assert_array_equal(b, [0.0])
        np.testing.assert_array_equal(G_b, [0.0])
        np.testing.assert_array_equal(velocity_W, 0.0)  # AdaGrad keeps no velocity
        state = (W, b, velocity_W, velocity_b, G_W, G_b)


@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_adagrad_first_step_moves_every_parameter_by_the_learning_rate(model):
    # From G = 0: G = g², so lr·g/√G = lr·sign(g), for W and b alike, whatever the gradient's scale.
    X, y, W, b = sgd_problem(model, seed=14)
    zeros = (np.zeros_like(W), np.zeros_like(b))
    _, W1, b1, *_ = oracle.sgd_step(model, X, y, W, b, *zeros, learning_rate=0.1, l2=0.2, optimizer="adagrad",
                                    accumulator_W=zeros[0], accumulator_b=zeros[1])
    np.testing.assert_allclose(np.abs(W1 - W), 0.1, rtol=1e-9)
    np.testing.assert_allclose(np.abs(b1 - b), 0.1, rtol=1e-9)


@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_adagrad_l1_threshold_is_per_parameter_and_skips_the_bias(model):
    X, y, W, b = sgd_problem(model, seed=15)
    rng = np.random.default_rng(16)
    G_W, G_b = rng.uniform(0, 3, size=W.shape), rng.uniform(0, 3, size=b.shape)
    zeros = (np.zeros_like(W), np.zeros_like(b))
    kwargs = dict(learning_rate=0.3, l2=0.1, optimizer="adagrad", accumulator_W=G_W, accumulator_b=G_b)
    _, W0, b0, _, _, G_W0, G_b0 = oracle.sgd_step(model, X, y, W, b, *zeros, **kwargs)
    _, W1, b1, _, _, G_W1, G_b1 = oracle.sgd_step(model, X, y, W, b, *zeros, l1=2.0, **kwargs)
    np.testing.assert_array_equal(W1, oracle.soft_threshold(W0, 0.3 * 2.0 / (np.sqrt(G_W0) + 1e-10)))
    for before, after in ((b0, b1), (G_W0, G_W1), (G_b0, G_b1)):
        np.testing.assert_array_equal(after, before)
    assert (W1 == 0).any() and (W1 != 0).any()


def test_optimizer_arguments_are_checked():
    X, y, W, b = sgd_problem("softmax")
    zeros = (np.zeros_like(W), np.zeros_like(b))
    with pytest.raises(ValueError, match="optimizer"):
        oracle.sgd_step("softmax", X, y, W, b, *zeros, learning_rate=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="momentum"):
        oracle.sgd_step("softmax", X, y, W, b, *zeros, learning_rate=0.1, momentum=0.9, optimizer="adagrad",
                        accumulator_W=zeros[0], accumulator_b=zeros[1])
    with pytest.raises(ValueError, match="accumulator"):
        oracle.sgd_step("softmax", X, y, W, b, *zeros, learning_rate=0.1, optimizer="adagrad")
    # SGD returns the accumulators only when given them, unchanged.
    assert len(oracle.sgd_step("softmax", X, y, W, b, *zeros, learning_rate=0.1)) == 5
    result = oracle.sgd_step("softmax", X, y, W, b, *zeros, learning_rate=0.1, accumulator_W=np.ones_like(W),
                             accumulator_b=np.ones_like(b))
    assert len(result) == 7 and (result[5] == 1).all() and (result[6] == 1).all()


# -- Adam, and both per-parameter optimizers against PyTorch's --------------------------------------------------------


@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_adam_first_step_moves_every_parameter_by_the_learning_rate(model):
    # t = 1: m̂ = m/(1 − β₁) = g and v̂ = v/(1 − β₂) = g², so the step is lr·g/(|g| + ε) ≈ lr·sign(g).
    X, y, W, b = sgd_problem(model, seed=17)
    zeros = (np.zeros_like(W), np.zeros_like(b))
    _, W1, b1, m_W, m_b, v_W, v_b = oracle.sgd_step(model, X, y, W, b, *zeros, learning_rate=0.1, l2=0.2,
                                                    optimizer="adam", accumulator_W=zeros[0],
                                                    accumulator_b=zeros[1], step_count=1)
    _, dW, db = data_gradients(model, X, y, W, b)
    g_W = dW + 0.2 * W
    np.testing.assert_allclose(np.abs(W1 - W), 0.1 * np.abs(g_W) / (np.abs(g_W) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(np.abs(b1 - b), 0.1 * np.abs(db) / (np.abs(db) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m_W, 0.1 * (dW + 0.2 * W), rtol=1e-12)  # (1 − β₁) g
    np.testing.assert_allclose(v_b, 0.001 * db**2, rtol=1e-12)  # (1 − β₂) g², the bias without L2


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
@pytest.mark.parametrize("model", ["softmax", "sigmoid"])
def test_per_parameter_optimizers_match_torch_optim(model, optimizer):
    """Four steps against ``torch.optim.Adagrad`` / ``torch.optim.Adam`` (weight decay = L2 on W only) fed the
    oracle's data gradients: the same update rule, ε and bias corrections."""
    torch = pytest.importorskip("torch")
    X, y, W, b = sgd_problem(model, seed=18)
    l2, lr = 0.1, 0.05
    W_t, b_t = torch.tensor(W, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    groups = [{"params": [W_t], "weight_decay": l2}, {"params": [b_t], "weight_decay": 0.0}]
    torch_optimizer = (torch.optim.Adagrad(groups, lr=lr, eps=1e-10) if optimizer == "adagrad"
                       else torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8))
    state = [W, b, np.zeros_like(W), np.zeros_like(b), np.zeros_like(W), np.zeros_like(b)]
    for step in range(1, 5):
        _, dW, db = data_gradients(model, X, y, W_t.numpy(), b_t.numpy())
        W_t.grad, b_t.grad = torch.tensor(dW), torch.tensor(db)
        torch_optimizer.step()
        _, *state = oracle.sgd_step(model, X, y, state[0], state[1], *state[2:4], learning_rate=lr, l2=l2,
                                    optimizer=optimizer, accumulator_W=state[4], accumulator_b=state[5],
                                    step_count=step)
        np.testing.assert_allclose(state[0], W_t.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(state[1], b_t.numpy(), rtol=1e-12, atol=1e-15)


def test_oracle_constants_are_its_own_and_agree_with_the_backends():
    from linclass_gpu.backends import base

    assert "from ." not in Path(oracle.__file__).read_text()  # a reference shares no code with what it checks
    for name in ("MODELS", "OPTIMIZERS", "ADAGRAD_EPS", "ADAM_BETAS", "ADAM_EPS"):
        assert getattr(oracle, name) == getattr(base, name), name


@pytest.mark.parametrize("optimizer,momentum,nesterov", [
    ("sgd", 0.9, True), ("adagrad", 0.0, False), ("adam", 0.0, False),
    ("rmsprop", 0.0, False), ("adagrad", 0.5, False), ("adam", 0.0, True),
])
def test_oracle_refuses_the_options_the_backends_refuse(optimizer, momentum, nesterov):
    from linclass_gpu.backends.base import check_optimizer

    try:
        check_optimizer(optimizer, momentum, nesterov)
    except ValueError as error:
        refused = str(error)
    else:
        refused = None
    X, y = np.ones((2, 3)), np.array([0, 1])
    W, b = np.zeros((3, 2)), np.zeros(2)
    accumulators = {} if optimizer == "sgd" else {"accumulator_W": np.zeros_like(W), "accumulator_b": np.zeros_like(b)}

    def call():
        return oracle.sgd_step("softmax", X, y, W, b, np.zeros_like(W), np.zeros_like(b), learning_rate=0.1,
                               momentum=momentum, nesterov=nesterov, optimizer=optimizer, step_count=1, **accumulators)

    if refused is None:
        call()
    else:
        with pytest.raises(ValueError, match=re.escape(refused)):
            call()
