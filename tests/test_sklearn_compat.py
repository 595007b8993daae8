"""The estimators drop into scikit-learn: clone, Pipeline, GridSearchCV, cross_val_score, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from linclass_gpu import LogisticRegression, SoftmaxRegression

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone, is_classifier  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


@pytest.fixture
def problem(rng):
    centres = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    y = rng.integers(0, 3, size=240)
    return centres[y] + rng.normal(size=(240, 3)), y


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_clone_and_tags(estimator):
    model = estimator(epochs=3, learning_rate=0.2, random_state=1)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params() and is_classifier(model)


def test_pipeline_grid_search_and_cross_validation(problem):
    X, y = problem
    pipeline = make_pipeline(StandardScaler(), SoftmaxRegression(epochs=5, random_state=0))
    assert pipeline.fit(X, y).score(X, y) > 0.9
    search = GridSearchCV(SoftmaxRegression(epochs=5, random_state=0), {"learning_rate": [0.05, 0.5]}, cv=3)
    assert search.fit(X, y).best_params_["learning_rate"] in (0.05, 0.5)
    scores = cross_val_score(SoftmaxRegression(epochs=5, random_state=0), X, y, cv=4)
    assert scores.shape == (4,) and scores.min() > 0.85


def test_pickle_round_trip_predicts_the_same(problem):
    X, y = problem
    model = SoftmaxRegression(epochs=3, random_state=0).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
