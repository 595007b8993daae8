"""Defaults that converge: small data sets match scikit-learn's LogisticRegression, more epochs reach the
L2-regularised optimum, and a fit that runs out of epochs says so."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logsumexp

from linclass_gpu import LogisticRegression, SoftmaxRegression
from linclass_gpu.estimators import AUTO_BATCH_ROWS, MIN_AUTO_STEPS_PER_EPOCH
from linclass_gpu.schedules import LearningRateSchedule
from linclass_gpu.training import ConvergenceWarning, TrainingHistory

datasets = pytest.importorskip("sklearn.datasets")


def standardised_split(name: str):
    """scikit-learn's toy data set ``name``: a stratified 75/25 split (random_state 0), standardised on the train
    part."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits"])
def test_defaults_match_scikit_learn_on_small_data(name):
    from sklearn.linear_model import LogisticRegression as ScikitLogisticRegression

    X_train, X_test, y_train, y_test = standardised_split(name)
    reference = ScikitLogisticRegression(max_iter=5000).fit(X_train, y_train).score(X_test, y_test)
    model = SoftmaxRegression(random_state=0).fit(X_train, y_train)  # every hyperparameter at its default
    assert model.score(X_test, y_test) >= reference - 0.01
    assert model.n_iter_ < model.epochs  # stopped by tol, without a ConvergenceWarning


def test_small_data_takes_enough_steps_per_epoch():
    X_train, _, y_train, _ = standardised_split("iris")  # 112 rows: one step per epoch at a batch of 128
    model = SoftmaxRegression(epochs=3, random_state=0).fit(X_train, y_train)
    batch = len(y_train) // MIN_AUTO_STEPS_PER_EPOCH
    assert model.t_ == 3 * -(-len(y_train) // batch) >= 3 * MIN_AUTO_STEPS_PER_EPOCH
    large = SoftmaxRegression(epochs=1, random_state=0).fit(np.zeros((10_000, 2)), np.arange(10_000) % 2)
    assert large.t_ == -(-10_000 // AUTO_BATCH_ROWS)


def regularised_objective(W, b, X, y, alpha, sigmoid):
    """Mean cross-entropy plus ``alpha/2·‖W‖²`` in float64, written from the formulas (no library code)."""
    Z = X @ W + b
    if sigmoid:
        z = Z[:, 0]
        loss = np.mean(np.logaddexp(0.0, z) - y * z)
    else:
        loss = np.mean(logsumexp(Z, axis=1) - Z[np.arange(len(y)), y])
    return loss + alpha / 2 * np.sum(W * W)


def lbfgs_optimum(X, y, alpha, sigmoid):
    """The regularised objective's minimum, by scipy's L-BFGS on the exact gradient to machine precision."""
    D, K = X.shape[1], 1 if sigmoid else int(y.max()) + 1

    def value_and_gradient(theta):
        W, b = theta[:D * K].reshape(D, K), theta[D * K:]
        Z = X @ W + b
        if sigmoid:
            dZ = (expit(Z[:, 0]) - y)[:, None] / len(y)
        else:
            dZ = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
            dZ[np.arange(len(y)), y] -= 1
            dZ /= len(y)
        gradient = np.concatenate([(X.T @ dZ + alpha * W).ravel(), dZ.sum(axis=0)])
        return regularised_objective(W, b, X, y, alpha, sigmoid), gradient

    result = minimize(value_and_gradient, np.zeros(D * K + K), jac=True, method="L-BFGS-B",
                      options=dict(maxiter=20_000, gtol=1e-12, ftol=1e-15))
    return result.fun


# Epochs within which averaged SGD with the default schedule comes within 1e-3 of the optimum (found 1e-4 to 6e-4
# at 3000 on these data sets; 1000 epochs leave ~1e-3).
EPOCHS_TO_OPTIMUM = 3000


@pytest.mark.slow  # 3000 epochs per case
@pytest.mark.parametrize("name,estimator", [("digits", SoftmaxRegression), ("breast_cancer", SoftmaxRegression),
                                            ("breast_cancer", LogisticRegression)])
def test_more_epochs_reach_the_regularised_optimum(name, estimator):
    alpha = 1e-3
    X, _, y, _ = standardised_split(name)
    sigmoid = estimator is LogisticRegression
    optimum = lbfgs_optimum(X, y, alpha, sigmoid)
    model = estimator(alpha=alpha, epochs=EPOCHS_TO_OPTIMUM, tol=None, dtype="float64", random_state=0).fit(X, y)
    reached = regularised_objective(model.coef_.T, model.intercept_, X, y, alpha, sigmoid)
    assert optimum <= reached <= optimum * (1 + 1e-3), (reached - optimum) / optimum
    shorter = estimator(alpha=alpha, epochs=100, tol=None, dtype="float64", random_state=0).fit(X, y)
    assert regularised_objective(shorter.coef_.T, shorter.intercept_, X, y, alpha, sigmoid) > reached


def test_running_out_of_epochs_warns_and_converging_does_not():
    X, _, y, _ = standardised_split("wine")
    with pytest.warns(ConvergenceWarning, match="epochs=2"):
        model = SoftmaxRegression(epochs=2, random_state=0).fit(X, y)
    assert model.n_iter_ == 2
    from sklearn.exceptions import ConvergenceWarning as ScikitConvergenceWarning

    with pytest.warns(ScikitConvergenceWarning):  # scikit-learn's class too, once scikit-learn is loaded
        SoftmaxRegression(epochs=2, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        converged = SoftmaxRegression(random_state=0).fit(X, y)
        SoftmaxRegression(epochs=2, tol=None, random_state=0).fit(X, y)  # no stopping rule: nothing to warn of
    assert converged.n_iter_ < converged.epochs


def test_the_tail_average_covers_the_latest_half_or_more_of_the_epochs():
    history = TrainingHistory()
    for epoch in range(1, 40):
        history.loss.append(0.0)
        history.add_to_average((np.array([float(epoch)]), np.array([0.0])), epoch)
        covered = history.averaged_epochs
        assert epoch / 2 <= covered <= max(1, 3 * epoch / 4 + 1)
        # the mean of the last `covered` epochs' values 1..epoch
        assert history.average[0][0] == pytest.approx(np.mean(np.arange(epoch - covered + 1, epoch + 1)))


def test_average_false_returns_the_last_iterate_and_true_its_tail_mean():
    X, _, y, _ = standardised_split("wine")
    options = dict(epochs=6, tol=None, random_state=0, dtype="float64")
    last = SoftmaxRegression(average=False, **options).fit(X, y)
    averaged = SoftmaxRegression(average=True, **options).fit(X, y)
    np.testing.assert_array_equal(last._sgd_state["W"], averaged._sgd_state["W"])  # the same SGD iterates
    assert not np.array_equal(last.coef_, averaged.coef_)
    with pytest.raises(ValueError, match="average"):
        SoftmaxRegression(average=-1).fit(X, y)


def test_optimal_counts_steps_and_the_floor_bounds_every_decay():
    schedule = LearningRateSchedule("optimal", alpha=1e-2)
    first = schedule(0, 0)
    assert first == pytest.approx(1e-2 ** -0.25)
    t0 = 1 / (first * 1e-2)
    assert schedule(0, 10) == pytest.approx(1 / (1e-2 * (t0 + 10)))  # ten steps, whatever their batch size
    floored = LearningRateSchedule("exponential", initial=0.5, gamma=0.6, floor=0.1)
    assert floored(1, 0) == pytest.approx(0.3) and floored(50, 0) == 0.1
    with pytest.raises(ValueError, match="min_learning_rate"):
        LearningRateSchedule(floor=float("inf"))
