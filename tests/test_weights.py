"""sample_weight and class_weight at the estimator level (the backends' weighted math is in test_backend_contract)."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu import LogisticRegression, SoftmaxRegression


@pytest.fixture
def imbalanced(rng):
    """Two overlapping classes, 9 to 1: an unweighted model under-predicts the rare one."""
    y = (rng.random(2000) < 0.1).astype(int)
    X = (rng.normal(size=(2000, 4)) + y[:, None] * 1.0).astype(np.float32)
    return X, y


def recall(model, X, y, label):
    return float(np.mean(model.predict(X)[y == label] == label))


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_unit_weights_change_nothing(imbalanced, estimator):
    X, y = imbalanced
    plain = estimator(epochs=3, random_state=0).fit(X, y)
    weighted = estimator(epochs=3, random_state=0).fit(X, y, sample_weight=np.ones(len(y)))
    uniform = estimator(epochs=3, random_state=0, class_weight={0: 1.0, 1: 1.0}).fit(X, y)
    np.testing.assert_array_equal(weighted.coef_, plain.coef_)
    np.testing.assert_array_equal(uniform.coef_, plain.coef_)


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_weights_shift_the_model_towards_the_heavier_rows(imbalanced, estimator):
    X, y = imbalanced
    plain = estimator(epochs=5, random_state=0).fit(X, y)
    balanced = estimator(epochs=5, random_state=0, class_weight="balanced").fit(X, y)
    by_rows = estimator(epochs=5, random_state=0).fit(X, y, sample_weight=np.where(y == 1, 9.0, 1.0))
    assert recall(balanced, X, y, 1) > recall(plain, X, y, 1) + 0.2
    assert recall(by_rows, X, y, 1) > recall(plain, X, y, 1) + 0.2


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_zero_weight_rows_do_not_count(imbalanced, estimator):
    X, y = imbalanced
    weights = np.where(np.arange(len(y)) % 3 == 0, 0.0, 1.0)
    ignored = weights == 0
    poisoned_X = np.where(ignored[:, None], X * 1e3 + 50, X)  # the zero-weight rows' features and labels changed
    poisoned_y = np.where(ignored, 1 - y, y)
    clean = estimator(epochs=2, random_state=0).fit(X, y, sample_weight=weights)
    poisoned = estimator(epochs=2, random_state=0).fit(poisoned_X, poisoned_y, sample_weight=weights)
    np.testing.assert_array_equal(poisoned.coef_, clean.coef_)
    np.testing.assert_array_equal(poisoned.loss_curve_, clean.loss_curve_)


@pytest.mark.parametrize("weights,error,message", [
    (np.full(2000, np.nan), ValueError, "NaN or infinity"),
    (np.r_[np.ones(1999), np.inf], ValueError, "NaN or infinity"),
    (-np.ones(2000), ValueError, ">= 0"),
    (np.ones(5), ValueError, r"shape \(2000,\)"),
    (np.ones((2000, 2)), ValueError, r"shape \(2000,\)"),
    (np.array(["a"] * 2000), TypeError, "numbers"),
])
def test_bad_sample_weights_are_refused(imbalanced, weights, error, message):
    with pytest.raises(error, match=message):
        SoftmaxRegression().fit(*imbalanced, sample_weight=weights)


@pytest.mark.parametrize("class_weight,message", [
    ({7: 2.0}, "not classes"), ({0: -1.0}, ">= 0"), ("heavy", "balanced"),
])
def test_bad_class_weights_are_refused(imbalanced, class_weight, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(class_weight=class_weight).fit(*imbalanced)


def test_partial_fit_takes_sample_weights_but_not_balanced(imbalanced):
    X, y = imbalanced
    model = SoftmaxRegression(random_state=0).partial_fit(X, y, classes=[0, 1], sample_weight=np.ones(len(y)))
    assert model.n_iter_ == 1
    with pytest.raises(ValueError, match="balanced.*dict"):
        SoftmaxRegression(class_weight="balanced").partial_fit(X, y, classes=[0, 1])


def test_checkpoint_of_other_weights_is_refused(tmp_path, imbalanced):
    X, y = imbalanced
    SoftmaxRegression(epochs=1).fit(X, y, checkpoint=tmp_path / "c.npz")
    with pytest.raises(ValueError, match="other training data"):
        SoftmaxRegression(epochs=2).fit(X, y, sample_weight=np.full(len(y), 2.0), checkpoint=tmp_path / "c.npz")
