"""SoftmaxRegression and LogisticRegression: labels, predictions, persistence, bad input, MNIST with defaults."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import blobs

from linclass_gpu import LogisticRegression, NotFittedError, SoftmaxRegression, TrainingDivergedError, load_mnist

ESTIMATORS = [SoftmaxRegression, LogisticRegression]


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_defaults_reach_92_percent_on_mnist_in_5_epochs(mnist, seed):
    model = SoftmaxRegression(epochs=5, random_state=seed, input_scale=1 / 255)
    model.fit(mnist.train_images, mnist.train_labels)
    assert model.score(mnist.test_images, mnist.test_labels) >= 0.92
    assert model.coef_.shape == (10, 784) and model.n_iter_ == 5 and model.t_ == 5 * 469


def test_uint8_with_scale_trains_like_prescaled_floats(mnist):
    images, labels = mnist.train_images[:3000], mnist.train_labels[:3000]
    as_uint8 = SoftmaxRegression(epochs=2, random_state=0, input_scale=1 / 255).fit(images, labels)
    as_float = SoftmaxRegression(epochs=2, random_state=0).fit(images / np.float32(255), labels)
    np.testing.assert_allclose(as_uint8.coef_, as_float.coef_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([-5, 0, 11]), np.array([0.0, 1.0, 2.0])])
def test_labels_of_any_values_round_trip(rng, labels):
    X, y = blobs(rng)
    model = SoftmaxRegression(epochs=20, random_state=0).fit(X, labels[y])
    np.testing.assert_array_equal(model.classes_, labels)
    assert model.score(X, labels[y]) > 0.95
    assert set(model.predict(X)) <= set(labels)


@pytest.mark.parametrize("negative,positive", [(0, 1), (-1, 1), ("no", "yes"), (False, True)])
def test_binary_label_encodings_give_the_same_model(rng, negative, positive):
    X, y = blobs(rng, classes=2)
    reference = LogisticRegression(epochs=5, random_state=3).fit(X, y)
    model = LogisticRegression(epochs=5, random_state=3).fit(X, np.where(y == 1, positive, negative))
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    np.testing.assert_array_equal(model.classes_, np.array([negative, positive]))
    np.testing.assert_array_equal(model.predict(X), np.where(reference.predict(X) == 1, positive, negative))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_predictions_are_consistent(rng, estimator):
    X, y = blobs(rng, classes=2 if estimator is LogisticRegression else 4)
    model = estimator(epochs=10, random_state=0).fit(X, y)
    proba, log_proba = model.predict_proba(X), model.predict_log_proba(X)
    n_classes = len(model.classes_)
    assert proba.shape == log_proba.shape == (len(X), n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_proba), proba, rtol=1e-6)
    decision = model.decision_function(X)
    if estimator is LogisticRegression:
        assert decision.shape == (len(X),) and model.coef_.shape == (1, X.shape[1])
        np.testing.assert_array_equal(model.predict(X), model.classes_[(decision > 0).astype(int)])
        np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-decision.astype(np.float64))), rtol=1e-5)
    else:
        assert decision.shape == (len(X), n_classes) and model.coef_.shape == (n_classes, X.shape[1])
        np.testing.assert_array_equal(model.predict(X), model.classes_[decision.argmax(axis=1)])
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_save_load_round_trip_is_exact(tmp_path, rng, estimator):
    X, y = blobs(rng, classes=2)
    model = estimator(epochs=3, random_state=0, learning_rate=0.05, momentum=0.9).fit(X, np.array(["a", "b"])[y])
    path = tmp_path / "model.npz"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"], "no temporary file left behind"
    loaded = estimator.load(path)
    for name in ("coef_", "intercept_", "classes_", "loss_curve_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.get_params() == model.get_params() and loaded.n_features_in_ == 5 and loaded.n_iter_ == 3
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_loading_a_bad_model_file_names_the_problem(tmp_path, rng):
    X, y = blobs(rng)
    path = tmp_path / "model.npz"
    SoftmaxRegression(epochs=1).fit(X, y).save(path)
    stored = dict(np.load(path))

    def rewrite(**changes):
        bad = {**stored, **changes}
        np.savez(tmp_path / "bad.npz", **{k: v for k, v in bad.items() if v is not None})
        return tmp_path / "bad.npz"

    with pytest.raises(ValueError, match="missing.*coef_"):
        SoftmaxRegression.load(rewrite(coef_=None))
    with pytest.raises(ValueError, match="newer"):
        SoftmaxRegression.load(rewrite(format_version=np.array(99)))
    with pytest.raises(ValueError, match="do not fit"):
        SoftmaxRegression.load(rewrite(coef_=np.zeros((2, 5))))
    with pytest.raises(ValueError, match="not a LogisticRegression"):
        LogisticRegression.load(path)
    np.save(tmp_path / "objects.npy", np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        SoftmaxRegression.load(tmp_path / "objects.npy")


BAD_INPUTS = [
    ("NaN in X", lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), y), ValueError,
     "NaN or infinity"),
    ("inf in X", lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X), y), ValueError,
     "NaN or infinity"),
    ("1-D X", lambda X, y: (X[:, 0], y), ValueError, "2-D"),
    ("3-D X", lambda X, y: (X[:, :, None], y), ValueError, "2-D"),
    ("length mismatch", lambda X, y: (X, y[:-1]), ValueError, "different lengths"),
    ("empty X", lambda X, y: (X[:0], y[:0]), ValueError, "empty"),
    ("no features", lambda X, y: (X[:, :0], y), ValueError, "empty"),
    ("one class", lambda X, y: (X, np.zeros_like(y)), ValueError, "at least 2"),
    ("string X", lambda X, y: (X.astype(str), y), TypeError, "numbers"),
    ("object X of words", lambda X, y: (np.full(X.shape, "tall", dtype=object), y), TypeError, "numbers"),
    ("object X with None", lambda X, y: (np.where(X > 0, X, None), y), ValueError, "NaN"),  # None converts to NaN
    ("complex X", lambda X, y: (X.astype(complex), y), ValueError, "Complex data not supported"),
    ("sparse X with NaN", lambda X, y: (__import__("scipy.sparse").sparse.csr_matrix(
        np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X)), y), ValueError, "NaN or infinity"),
    ("no y", lambda X, y: (X, None), ValueError, "requires y to be passed"),
    ("continuous y", lambda X, y: (X, y + 0.5), ValueError, "continuous"),
    ("2-D y", lambda X, y: (X, np.stack([y, y], axis=1)), ValueError, "1-D"),
]


@pytest.mark.parametrize("case,corrupt,error,message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_training_input_fails_before_any_work(rng, case, corrupt, error, message):
    X, y = corrupt(*blobs(rng))
    model = SoftmaxRegression()
    with pytest.raises(error, match=message):
        model.fit(X, y)
    assert not hasattr(model, "coef_")


def test_column_vector_y_is_accepted_with_a_warning(rng):
    X, y = blobs(rng)
    model = SoftmaxRegression(epochs=3, random_state=0)
    with pytest.warns(UserWarning, match="column-vector y"):
        model.fit(X, y[:, None])
    np.testing.assert_array_equal(model.coef_,
                                  SoftmaxRegression(epochs=3, random_state=0).fit(X, y).coef_)


def test_prediction_checks(rng):
    X, y = blobs(rng)
    model = SoftmaxRegression(epochs=1)
    for method in (model.predict, model.predict_proba, model.decision_function, model.predict_log_proba):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(X)
    model.fit(X, y)
    with pytest.raises(ValueError, match="4 features, but SoftmaxRegression is expecting 5 features"):
        model.predict(X[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full_like(X, np.nan))


@pytest.mark.parametrize("parameters,message", [
    (dict(epochs=0), "epochs"), (dict(batch_size=-3), "batch_size"), (dict(batch_size=2.5), "batch_size"),
    (dict(learning_rate=0), "learning_rate"), (dict(alpha=-1), "alpha"), (dict(momentum=1.0), "momentum"),
    (dict(nesterov=True, momentum=0), "nesterov"), (dict(dtype="int8"), "dtype"), (dict(schedule="x"), "schedule"),
    (dict(input_scale=0), "input_scale"),
])
def test_bad_parameters_are_refused_at_fit(rng, parameters, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(**parameters).fit(*blobs(rng))


def test_divergence_stops_with_advice_and_keeps_finite_weights(rng):
    X, y = blobs(rng, spread=1e3)
    model = SoftmaxRegression(learning_rate=1e36, schedule="constant", momentum=0.0, epochs=5)
    with pytest.raises(TrainingDivergedError, match="smaller learning_rate"):
        model.fit(X * 1e3, y)
    assert np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all()
    assert model.n_iter_ == len(model.loss_curve_) < 5
    model.predict(X)  # still usable


def test_params_untouched_by_fit_and_settable(rng):
    model = SoftmaxRegression(epochs=2, learning_rate=0.1)
    before = model.get_params()
    model.fit(*blobs(rng))
    assert model.get_params() == before
    assert model.set_params(epochs=4) is model and model.epochs == 4
    with pytest.raises(ValueError, match="unknown parameter"):
        model.set_params(epoch=4)
    assert repr(model) == "SoftmaxRegression(epochs=4, learning_rate=0.1)"


def test_options_shape_the_fit(rng):
    X, y = blobs(rng)
    no_intercept = SoftmaxRegression(epochs=3, fit_intercept=False).fit(X, y)
    assert np.all(no_intercept.intercept_ == 0)
    double = SoftmaxRegression(epochs=3, dtype="float64").fit(X, y)
    assert double.coef_.dtype == np.float64 and no_intercept.coef_.dtype == np.float32
    validated = SoftmaxRegression(epochs=4).fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    assert validated.validation_scores_.shape == (4,) and validated.validation_scores_[-1] > 0.9
    with pytest.raises(ValueError, match="validation y has labels not among the classes"):
        SoftmaxRegression().fit(X, y, validation_data=(X, y + 10))


def test_features_near_the_float32_limit_stop_with_a_value_error(rng):
    X, y = blobs(rng)
    model = SoftmaxRegression(epochs=3)
    with pytest.raises(ValueError, match="diverged.*scale the features"):
        model.fit(X * np.float32(1e37), y)
    assert np.isfinite(model.coef_).all()


def test_l2_keeps_weights_bounded_on_separable_data(rng):
    X, y = blobs(rng, classes=2, spread=5.0)
    norms = {alpha: np.linalg.norm(LogisticRegression(alpha=alpha, epochs=50, schedule="constant", random_state=0)
                                   .fit(X, y).coef_) for alpha in (0.0, 1e-2)}
    assert norms[1e-2] < norms[0.0] / 2


def test_interrupt_during_fit_leaves_the_last_finished_epoch(rng, monkeypatch):
    X, y = blobs(rng, n=400)
    after_one_epoch = SoftmaxRegression(epochs=1, batch_size=32, random_state=0).fit(X, y)
    from linclass_gpu.backends.array_backend import ArrayFusedSGD

    original_step, steps = ArrayFusedSGD.step, []

    def step_then_ctrl_c(self, rows, learning_rate):
        steps.append(1)
        if len(steps) == 13 + 5:  # 400 rows / 32 = 13 steps an epoch: Ctrl-C in the middle of the second
            raise KeyboardInterrupt
        original_step(self, rows, learning_rate)

    monkeypatch.setattr(ArrayFusedSGD, "step", step_then_ctrl_c)
    model = SoftmaxRegression(epochs=3, batch_size=32, random_state=0)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y)
    np.testing.assert_array_equal(model.coef_, after_one_epoch.coef_)
    assert model.n_iter_ == 1 and model.score(X, y) > 0.9
