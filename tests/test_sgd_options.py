"""scikit-learn's SGD options: partial_fit, warm_start, early stopping, tol, the adaptive and optimal schedules."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu import LogisticRegression, SoftmaxRegression
from linclass_gpu.backends import get_backend
from linclass_gpu.schedules import LearningRateSchedule
from linclass_gpu.training import PlateauRule, holdout_rows, train_sgd


@pytest.fixture
def problem(rng):
    centres = rng.normal(scale=2.0, size=(3, 6))
    y = rng.integers(0, 3, size=330)
    return (centres[y] + rng.normal(size=(330, 6))).astype(np.float32), y


def test_partial_fit_calls_equal_fit_epochs_bitwise(problem):
    X, y = problem
    streamed = SoftmaxRegression(random_state=4, momentum=0.9, schedule="invscaling")
    for _ in range(3):
        streamed.partial_fit(X, y, classes=np.unique(y))
    fitted = SoftmaxRegression(random_state=4, momentum=0.9, schedule="invscaling", epochs=3).fit(X, y)
    np.testing.assert_array_equal(streamed.coef_, fitted.coef_)
    np.testing.assert_array_equal(streamed.loss_curve_, fitted.loss_curve_)
    assert streamed.n_iter_ == 3 and streamed.t_ == fitted.t_


def test_partial_fit_over_chunks_that_lack_classes(problem):
    X, y = problem
    model = SoftmaxRegression(random_state=0, schedule="constant", learning_rate=0.1)
    order = np.argsort(y, kind="stable")  # chunks hold one or two classes each
    for chunk in np.array_split(order, 5):
        model.partial_fit(X[chunk], y[chunk], classes=[0, 1, 2])
    for _ in range(5):
        model.partial_fit(X, y)
    reference = SoftmaxRegression(random_state=0, schedule="constant", learning_rate=0.1, epochs=5).fit(X, y)
    assert model.score(X, y) >= reference.score(X, y) - 0.03 and model.n_iter_ == 10


@pytest.mark.parametrize("call,message", [
    (lambda m, X, y: m.partial_fit(X, y), "classes must be given on the first call"),
    (lambda m, X, y: m.partial_fit(X, y + 5, classes=[0, 1, 2]), "not among the classes"),
])
def test_partial_fit_first_call_checks(problem, call, message):
    with pytest.raises(ValueError, match=message):
        call(SoftmaxRegression(), *problem)


def test_partial_fit_later_calls_check_consistency(problem):
    X, y = problem
    model = SoftmaxRegression().partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="differ from those of the first call"):
        model.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="5 features, but SoftmaxRegression is expecting 6 features"):
        model.partial_fit(X[:, :5], y)
    one_vs_rest = LogisticRegression().partial_fit(X, y, classes=[0, 1, 2])  # three classes: one sigmoid each
    assert one_vs_rest.coef_.shape == (3, 6) and not one_vs_rest.multilabel_


def test_a_loaded_model_continues_with_partial_fit(tmp_path, problem):
    X, y = problem
    model = SoftmaxRegression(epochs=1, random_state=0).fit(X, y)
    model.save(tmp_path / "m.npz")
    loaded = SoftmaxRegression.load(tmp_path / "m.npz").partial_fit(X, y)
    assert loaded.n_iter_ == 1 and not np.array_equal(loaded.coef_, model.coef_)


def test_warm_start_continues_from_the_fitted_weights(problem):
    X, y = problem
    cold = SoftmaxRegression(epochs=2, random_state=0).fit(X, y)
    first_loss = cold.loss_curve_[0]
    cold.fit(X, y)
    assert cold.loss_curve_[0] == first_loss, "without warm_start a second fit starts afresh"
    warm = SoftmaxRegression(epochs=2, random_state=0, warm_start=True).fit(X, y)
    warm.fit(X, y)
    assert warm.loss_curve_[0] < first_loss


def test_early_stopping_keeps_the_best_epoch(problem, rng):
    X, y = problem
    X_val, y_val = X[:100] + rng.normal(scale=2.0, size=(100, 6)).astype(np.float32), y[:100]
    stopped = SoftmaxRegression(epochs=30, random_state=0, early_stopping=True, n_iter_no_change=2, tol=0.05,
                                schedule="constant").fit(X, y, validation_data=(X_val, y_val))
    assert stopped.n_iter_ < 30, "a tolerance of 5 points must end training early"
    best_epoch = int(np.argmax(stopped.validation_scores_)) + 1
    reference = SoftmaxRegression(epochs=best_epoch, random_state=0, schedule="constant").fit(X, y)
    np.testing.assert_array_equal(stopped.coef_, reference.coef_)


def test_early_stopping_holds_out_a_stratified_fraction(problem):
    X, y = problem
    model = SoftmaxRegression(epochs=3, batch_size=128, early_stopping=True, validation_fraction=0.2,
                              random_state=0).fit(X, y)
    assert model.validation_scores_.shape == (3,) and model.t_ == 3 * -(-(330 - 66) // 128)
    kept, held = holdout_rows(y, 0.2, np.random.default_rng(0))
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == 330
    for label in range(3):
        assert abs(np.sum(y[held] == label) - 0.2 * np.sum(y == label)) <= 1
    with pytest.raises(ValueError, match="validation_fraction"):
        SoftmaxRegression(early_stopping=True, validation_fraction=1.5).fit(X, y)


def test_tol_stops_when_the_training_loss_stalls(problem):
    X, y = problem
    model = SoftmaxRegression(epochs=50, tol=10.0, n_iter_no_change=3, random_state=0).fit(X, y)
    assert model.n_iter_ == 1 + 3


def test_adaptive_divides_the_rate_by_five_at_each_plateau():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, size=40)
    backend = get_backend("numpy")
    stepper = backend.fused_sgd("softmax", X, y, np.zeros((3, 2), np.float32), np.zeros(2, np.float32),
                                max_batch_size=20)
    rates = []
    original_run_epoch = stepper.run_epoch
    stepper.run_epoch = lambda rows, learning_rates, *args: (rates.extend(learning_rates),
                                                             original_run_epoch(rows, learning_rates, *args))
    history = train_sgd(stepper, backend, 40, epochs=4, batch_size=20, rng=rng, progress=False,
                        schedule=LearningRateSchedule("adaptive", 0.1),
                        plateau=PlateauRule("loss", tol=1e9, patience=1, adaptive=True))
    assert rates == pytest.approx([0.1] * 4 + [0.02] * 2 + [0.004] * 2)
    assert history.rate_scale == pytest.approx(1 / 125)


def test_adaptive_stops_once_the_rate_is_tiny(problem):
    X, y = problem
    model = SoftmaxRegression(epochs=100, schedule="adaptive", learning_rate=1e-5, tol=1e9, n_iter_no_change=1)
    assert model.fit(X, y).n_iter_ < 100


def test_optimal_schedule_needs_alpha_and_trains(problem):
    X, y = problem
    with pytest.raises(ValueError, match="alpha"):
        SoftmaxRegression(schedule="optimal", alpha=0.0).fit(X, y)
    assert SoftmaxRegression(schedule="optimal", alpha=1e-2, epochs=5).fit(X, y).score(X, y) > 0.8


def test_resume_mid_plateau_equals_an_uninterrupted_run(tmp_path, problem):
    X, y = problem
    options = dict(random_state=0, schedule="adaptive", tol=1e-3, n_iter_no_change=2, learning_rate=0.5)
    SoftmaxRegression(epochs=4, **options).fit(X, y, checkpoint=tmp_path / "c.npz")
    resumed = SoftmaxRegression(epochs=9, **options).fit(X, y, checkpoint=tmp_path / "c.npz")
    straight = SoftmaxRegression(epochs=9, **options).fit(X, y)
    np.testing.assert_array_equal(resumed.coef_, straight.coef_)
    np.testing.assert_array_equal(resumed.loss_curve_, straight.loss_curve_)


@pytest.fixture
def sparse_problem(rng):
    """Two informative features among twenty: an L1 model should zero the other eighteen."""
    X = rng.normal(size=(600, 20)).astype(np.float32)
    return X, (X[:, 0] - X[:, 1] > 0).astype(int)


# A constant rate keeps the proximal threshold lr·l1 from shrinking to nothing, as a decaying one would; the last
# iterate, not an average of iterates (whose zeros need not coincide), holds the exact zeros.
SPARSE_FIT = dict(alpha=0.03, epochs=20, batch_size=128, random_state=0, schedule="constant", average=False)


def test_l1_zeroes_most_irrelevant_weights_exactly(sparse_problem):
    X, y = sparse_problem
    l1 = LogisticRegression(penalty="l1", **SPARSE_FIT).fit(X, y)
    l2 = LogisticRegression(penalty="l2", **SPARSE_FIT).fit(X, y)
    assert np.count_nonzero(l1.coef_[0, 2:]) <= 9 and np.all(l1.coef_[0, :2] != 0)
    assert np.count_nonzero(l2.coef_[0, 2:]) == 18
    assert l1.score(X, y) > 0.95


def test_elasticnet_lies_between_and_penalty_none_is_alpha_zero(sparse_problem):
    X, y = sparse_problem
    nonzero = {ratio: np.count_nonzero(SoftmaxRegression(penalty="elasticnet", l1_ratio=ratio, **SPARSE_FIT)
                                       .fit(X, y).coef_) for ratio in (0.2, 0.6, 1.0)}
    assert nonzero[1.0] < nonzero[0.6] < nonzero[0.2]
    no_penalty = SoftmaxRegression(penalty=None, epochs=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(no_penalty.coef_, SoftmaxRegression(alpha=0.0, epochs=3, random_state=0)
                                  .fit(X, y).coef_)


def test_the_bias_is_never_penalised(rng):
    X = rng.normal(size=(400, 3)).astype(np.float32)
    y = (rng.random(400) < 0.9).astype(int)  # the label depends on nothing but the bias
    model = LogisticRegression(penalty="l1", alpha=0.5, epochs=20, random_state=0).fit(X, y)
    assert np.all(model.coef_ == 0) and model.intercept_[0] > 1.5


@pytest.mark.parametrize("parameters,message", [(dict(penalty="l3"), "penalty"),
                                                (dict(penalty="elasticnet", l1_ratio=1.5), "l1_ratio")])
def test_bad_penalties_are_refused(sparse_problem, parameters, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(**parameters).fit(*sparse_problem)


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_per_parameter_optimizers_train_and_resume_bitwise(tmp_path, problem, optimizer):
    X, y = problem
    options = dict(optimizer=optimizer, learning_rate=0.05, schedule="constant", random_state=0)
    straight = SoftmaxRegression(epochs=6, **options).fit(X, y)
    assert straight.score(X, y) > 0.9
    SoftmaxRegression(epochs=3, **options).fit(X, y, checkpoint=tmp_path / "c.npz")
    resumed = SoftmaxRegression(epochs=6, **options).fit(X, y, checkpoint=tmp_path / "c.npz")
    np.testing.assert_array_equal(resumed.coef_, straight.coef_)
    streamed = SoftmaxRegression(**options)
    for _ in range(6):
        streamed.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(streamed.coef_, straight.coef_)


def test_momentum_belongs_to_sgd_and_unknown_optimizers_are_refused(problem):
    X, y = problem
    plain = SoftmaxRegression(optimizer="adagrad", epochs=2, random_state=0).fit(X, y)
    with_momentum = SoftmaxRegression(optimizer="adagrad", momentum=0.9, epochs=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(plain.coef_, with_momentum.coef_)
    with pytest.raises(ValueError, match="optimizer"):
        SoftmaxRegression(optimizer="rmsprop").fit(X, y)


def test_partial_fit_epoch_sets_the_schedules_epoch(problem):
    """Two calls that are halves of one pass (epoch=0 each) step at the epoch-0 rate, as one call over both halves
    does; without epoch= the second call counts as epoch 1 and decays."""
    X, y = problem
    parameters = dict(schedule="exponential", gamma=0.1, learning_rate=0.5, momentum=0.0, shuffle=False, batch_size=8,
                      random_state=0)
    whole = SoftmaxRegression(**parameters).partial_fit(X[:48], y[:48], classes=[0, 1, 2])
    halves = SoftmaxRegression(**parameters)
    halves.partial_fit(X[:24], y[:24], classes=[0, 1, 2], epoch=0).partial_fit(X[24:48], y[24:48], epoch=0)
    np.testing.assert_allclose(halves.coef_, whole.coef_, rtol=1e-6, atol=1e-7)
    decayed = SoftmaxRegression(**parameters)
    decayed.partial_fit(X[:24], y[:24], classes=[0, 1, 2]).partial_fit(X[24:48], y[24:48])
    assert not np.allclose(decayed.coef_, whole.coef_)
    with pytest.raises(ValueError, match="epoch"):
        halves.partial_fit(X, y, epoch=-1)


@pytest.mark.parametrize("change", ["features", "classes"])
def test_warm_start_on_another_problem_is_refused(problem, change):
    X, y = problem
    model = SoftmaxRegression(epochs=1, warm_start=True, random_state=0).fit(X, y)
    other_X, other_y = (np.hstack([X, X]), y) if change == "features" else (X, y % 2)
    with pytest.raises(ValueError, match="warm_start=True continues the fitted weights"):
        model.fit(other_X, other_y)
    assert SoftmaxRegression(epochs=1, random_state=0).fit(other_X, other_y).n_iter_ == 1  # without it: afresh


def test_an_interrupted_epoch_adds_no_steps(problem, monkeypatch):
    from linclass_gpu.backends.array_backend import ArrayFusedSGD

    X, y = problem
    steps_per_epoch, calls = -(-len(y) // 50), []
    step = ArrayFusedSGD.step

    def interrupted_in_the_second_epoch(self, rows, learning_rate):
        calls.append(learning_rate)
        if len(calls) == steps_per_epoch + 2:  # Ctrl-C in the middle of epoch 2
            raise KeyboardInterrupt
        step(self, rows, learning_rate)

    monkeypatch.setattr(ArrayFusedSGD, "step", interrupted_in_the_second_epoch)
    model = SoftmaxRegression(backend="numpy", epochs=3, batch_size=50, tol=None, random_state=0)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y)
    assert model.n_iter_ == 1 and model.t_ == steps_per_epoch
