"""All-vs-all logistic regression (issue 18): every pairwise model is the binary model of its two classes alone."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from linclass_gpu import oracle
from linclass_gpu.backends.pairwise_step import class_pairs, vote
from linclass_gpu.one_vs_one import OneVsOneLogisticRegression
from tests.tolerances import assert_close

N_ROWS, N_FEATURES, N_CLASSES = 61, 9, 5  # odd on purpose


def problem(rng, sparse: bool):
    centers = rng.normal(scale=2.0, size=(N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, N_ROWS)
    X = centers[y] + rng.normal(size=(N_ROWS, N_FEATURES))
    if sparse:
        X[rng.random(X.shape) < 0.5] = 0.0
        return scipy.sparse.csr_array(X), y
    return X, y


@pytest.mark.parametrize("penalty, optimizer", [("l2", "sgd"), ("elasticnet", "sgd"), (None, "adagrad")])
@pytest.mark.parametrize("sparse", [False, True])
def test_each_pair_is_the_binary_model_of_its_two_classes(sparse, penalty, optimizer):
    """Full batches: every step of pair (a, b) is exactly the full-batch step of a binary logistic regression on the
    rows of classes a and b alone (the oracle), labels a -> 0, b -> 1, with the same penalty and rates."""
    rng = np.random.default_rng(0)
    X, y = problem(rng, sparse)
    labels = np.array(["ant", "bee", "cat", "dog", "eel"])[y]
    epochs = 6
    model = OneVsOneLogisticRegression(epochs=epochs, batch_size=N_ROWS, learning_rate=0.3, schedule="constant",
                                       momentum=0.0, alpha=0.05, penalty=penalty, l1_ratio=0.3, optimizer=optimizer,
                                       average=False, tol=None, dtype="float64", random_state=0).fit(X, labels)
    l2, l1 = model._penalty_strengths()
    X_dense = X.toarray() if sparse else X
    assert model.coef_.shape == (len(class_pairs(N_CLASSES)), N_FEATURES)
    for k, (first, second) in enumerate(model.pairs_):
        rows = np.flatnonzero((y == first) | (y == second))
        W, b = np.zeros((N_FEATURES, 1)), np.zeros(1)
        velocity_W, velocity_b, accumulator_W, accumulator_b = (np.zeros_like(W), np.zeros_like(b),
                                                                np.zeros_like(W), np.zeros_like(b))
        for step in range(1, epochs + 1):
            extra = ({"optimizer": optimizer, "accumulator_W": accumulator_W, "accumulator_b": accumulator_b,
                      "step_count": step} if optimizer != "sgd" else {})
            result = oracle.sgd_step("sigmoid", X_dense[rows], (y[rows] == second).astype(float), W, b, velocity_W,
                                     velocity_b, learning_rate=0.3, l2=l2, l1=l1, **extra)
            W, b, velocity_W, velocity_b = result[1:5]
            if optimizer != "sgd":
                accumulator_W, accumulator_b = result[5:]
        assert_close(model.coef_[k], W[:, 0], "float64", len(rows) * epochs, f"pair {first, second} coef")
        assert_close(model.intercept_[k], b[0], "float64", len(rows) * epochs, f"pair {first, second} intercept")


def test_votes_match_scikit_learn():
    from sklearn.multiclass import _ovr_decision_function

    rng = np.random.default_rng(1)
    decisions = rng.normal(size=(40, 10))
    decisions[:5] = 0.0  # exact ties
    pairs = class_pairs(N_CLASSES)
    expected = _ovr_decision_function(decisions > 0, decisions, N_CLASSES)
    np.testing.assert_allclose(vote(decisions, pairs, N_CLASSES), expected, rtol=1e-12, atol=1e-12)


def test_minibatch_fit_predicts_like_scikit_learn_one_vs_one():
    """Minibatches on sparse rows: the votes pick the classes scikit-learn's OneVsOneClassifier of its logistic
    regressions picks (separated classes, so both are right almost everywhere)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsOneClassifier

    rng = np.random.default_rng(2)
    X, y = problem(rng, sparse=True)
    model = OneVsOneLogisticRegression(epochs=60, batch_size=8, learning_rate=0.2, tol=None,
                                       random_state=0).fit(X, y)
    reference = OneVsOneClassifier(LogisticRegression()).fit(X, y)
    assert np.mean(model.predict(X) == reference.predict(X)) >= 0.95
    assert model.score(X, y) >= 0.95
    assert model.decision_function(X).shape == (N_ROWS, N_CLASSES)


def test_refuses_what_it_does_not_take():
    X, y = problem(np.random.default_rng(3), sparse=False)
    with pytest.raises(ValueError, match="backend"):
        OneVsOneLogisticRegression(backend="triton").fit(X, y)
    with pytest.raises(ValueError, match="class_weight"):
        OneVsOneLogisticRegression(class_weight="balanced").fit(X, y)
    with pytest.raises(ValueError, match="not fitted"):
        OneVsOneLogisticRegression().predict(X)
