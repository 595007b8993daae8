"""LogisticRegression beyond two classes: one-vs-rest, multilabel with independent sigmoids, and the squared-error
loss, on every backend; the backend-level losses and steps are checked against the oracle in test_backend_contract."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_NAMES
from helpers import blobs as blobs_of

from linclass_gpu import LogisticRegression, SoftmaxRegression

# Small fits: the Triton interpreter runs every step on the CPU. Triton computes in float32 (and refuses float64), so
# results are compared at float32 precision.
FAST = dict(epochs=3, batch_size=32, random_state=0, dtype="float64")


def fast(backend: str) -> dict:
    """FAST on ``backend``, in the precision it computes in."""
    return {**FAST, "dtype": "float32" if backend == "triton" else "float64"}


def blobs(rng, classes=4):
    """test_estimators' Gaussian blobs: 240 rows, here 4 classes by default."""
    return blobs_of(rng, n=240, classes=classes)


def multilabel_problem(rng, n=400, d=6, labels=3):
    """Labels that are not mutually exclusive: label k is on where a fixed direction's projection is positive."""
    X = rng.normal(size=(n, d))
    directions = rng.normal(size=(d, labels))
    return X, (X @ directions > 0.3).astype(np.int64)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_one_vs_rest_is_one_binary_model_per_class(rng, backend):
    """The C sigmoids train together, yet each column is exactly the binary model of ``[y = k]`` alone: their losses
    add and their gradients never mix (same batches, same penalty, same momentum)."""
    X, y = blobs(rng)
    labels = np.array(["ant", "bee", "cat", "dog"])[y]
    together = LogisticRegression(backend=backend, **fast(backend)).fit(X, labels)
    assert together.coef_.shape == (4, 5) and together.intercept_.shape == (4,) and not together.multilabel_
    np.testing.assert_array_equal(together.classes_, ["ant", "bee", "cat", "dog"])
    for k, label in enumerate(together.classes_):
        alone = LogisticRegression(backend=backend, **fast(backend)).fit(X, labels == label)
        np.testing.assert_allclose(together.coef_[k], alone.coef_[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(together.intercept_[k], alone.intercept_[0], rtol=1e-4, atol=1e-5)
    # The loss curve is the sum of the binary models' BCEs per row.
    probabilities = together.predict_proba(X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    logits = together.decision_function(X)
    sigmoids = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(probabilities, sigmoids / sigmoids.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(together.predict_log_proba(X), np.log(probabilities), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(together.predict(X), together.classes_[np.argmax(logits, axis=1)])
    assert together.score(X, labels) > 0.9


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_multilabel_learns_independent_labels(rng, backend):
    X, Y = multilabel_problem(rng)
    model = LogisticRegression(backend=backend, **fast(backend)).fit(X, Y)
    assert model.multilabel_ and model.coef_.shape == (3, 6)
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    predicted = model.predict(X)
    assert predicted.shape == Y.shape and set(np.unique(predicted)) <= {0, 1}
    np.testing.assert_array_equal(predicted, (model.decision_function(X) > 0).astype(int))
    probabilities = model.predict_proba(X)
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-model.decision_function(X))), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(model.predict_log_proba(X), np.log(probabilities), rtol=1e-6, atol=1e-7)
    assert (predicted == Y).mean() > 0.9, "each label is linearly separable up to its margin"
    # score is subset accuracy: a row counts only with every label right.
    assert model.score(X, Y) == pytest.approx(np.all(predicted == Y, axis=1).mean())
    assert model.score(X, Y) > 0.75
    # Rows with no label or every label are fine; so is a validation set, scored the same way.
    model = LogisticRegression(backend=backend, **fast(backend)).fit(X, Y, validation_data=(X[:50], Y[:50]))
    assert model.validation_scores_[-1] == pytest.approx(model.score(X[:50], Y[:50]))


def test_multilabel_partial_fit_early_stopping_and_save_load(tmp_path, rng):
    X, Y = multilabel_problem(rng)
    streamed = LogisticRegression(**FAST)
    for chunk in np.array_split(np.arange(len(X)), 4):
        streamed.partial_fit(X[chunk], Y[chunk])  # the columns name the labels: no classes= needed
    assert streamed.multilabel_ and streamed.n_iter_ == 4
    with pytest.raises(ValueError, match="switches between class labels and a multilabel"):
        streamed.partial_fit(X[:10], Y[:10, 0])
    stopped = LogisticRegression(early_stopping=True, n_iter_no_change=2, **{**FAST, "epochs": 20}).fit(X, Y)
    assert len(stopped.validation_scores_) <= 20 and stopped.validation_scores_.max() > 0.6
    path = tmp_path / "multilabel.npz"
    stopped.save(path)
    loaded = LogisticRegression.load(path)
    assert loaded.multilabel_
    np.testing.assert_array_equal(loaded.predict(X), stopped.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), stopped.predict_proba(X))


def test_one_vs_rest_save_load_and_class_weight(tmp_path, rng):
    X, y = blobs(rng)
    model = LogisticRegression(class_weight={0: 3.0}, **FAST).fit(X, y)
    path = tmp_path / "ovr.npz"
    model.save(path)
    loaded = LogisticRegression.load(path)
    assert not loaded.multilabel_
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    # Weighting class 0's rows moves the model: the weights reach the one-vs-rest problem.
    assert not np.allclose(LogisticRegression(**FAST).fit(X, y).coef_, model.coef_)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_squared_error_loss_trains_and_records_its_own_loss(rng, backend):
    X, y = blobs(rng, classes=2)
    mse = LogisticRegression(backend=backend, loss="mse", **{**fast(backend), "epochs": 5}).fit(X, y)
    bce = LogisticRegression(backend=backend, **{**fast(backend), "epochs": 5}).fit(X, y)
    assert mse.score(X, y) > 0.9
    # loss_curve_ is the mean squared error of the probabilities: at most 1 per row, below BCE's on the same data.
    assert 0 <= mse.loss_curve_[-1] < 0.25 and mse.loss_curve_[-1] < bce.loss_curve_[-1]
    assert not np.allclose(mse.coef_, bce.coef_)


def test_squared_error_learns_slowly_from_a_confidently_wrong_start(rng):
    """The lecture's point: from a model that is confidently wrong, MSE's gradient 2(σ − y)σ(1 − σ) is ~0, so an
    epoch barely moves it; BCE's σ − y is ~1 and turns it around."""
    X, y = blobs(rng, classes=2)
    accuracy = {}
    for loss in ("mse", "log_loss"):
        model = LogisticRegression(warm_start=True, alpha=0.0, **{**FAST, "epochs": 5})
        model.fit(X, 1 - y)  # confidently wrong: trained on the flipped labels
        assert model.score(X, y) < 0.05
        model.set_params(loss=loss, epochs=1, schedule="constant", learning_rate=0.1, momentum=0.0)
        accuracy[loss] = model.fit(X, y).score(X, y)
    assert accuracy["mse"] < 0.2 and accuracy["log_loss"] > 0.9, accuracy


@pytest.mark.parametrize("y,fit_options,error,message", [
    (None, dict(loss="hinge"), ValueError, "loss must be one of"),
    ("indicator_with_2", {}, ValueError, "only 0 and 1"),
    ("indicator_nan", {}, ValueError, "only 0 and 1"),
    ("indicator", dict(class_weight={0: 2.0}), ValueError, "class_weight needs one class per row"),
    ("indicator_short", {}, ValueError, "different lengths"),
])
def test_bad_multioutput_input_is_refused(rng, y, fit_options, error, message):
    X, Y = multilabel_problem(rng, n=20)
    targets = {None: Y[:, 0], "indicator": Y, "indicator_short": Y[:-1],
               "indicator_with_2": np.where(Y == 1, 2, 0), "indicator_nan": np.where(Y == 1, np.nan, 0.0)}[y]
    with pytest.raises(error, match=message):
        LogisticRegression(**fit_options).fit(X, targets)


def test_softmax_regression_refuses_an_indicator_matrix(rng):
    X, Y = multilabel_problem(rng, n=20)
    with pytest.raises(ValueError, match="1-D"):
        SoftmaxRegression().fit(X, Y)


def test_loss_is_a_parameter_scikit_learn_sees(rng):
    sklearn_base = pytest.importorskip("sklearn.base")
    model = LogisticRegression(loss="mse", epochs=2)
    assert model.get_params()["loss"] == "mse"
    with pytest.raises(ValueError, match="SoftmaxRegression's loss is the cross-entropy"):
        SoftmaxRegression(loss="mse").fit(*blobs(rng))
    clone = sklearn_base.clone(model)
    assert clone.loss == "mse" and clone.epochs == 2
    assert repr(model) == "LogisticRegression(epochs=2, loss='mse')"
