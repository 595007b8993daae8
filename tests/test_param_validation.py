"""Hyperparameters and class weights: NumPy scalars count as numbers everywhere a Python number does; infinities,
NaN, bools and non-numbers are refused before any work, naming the parameter; class_weight keys must be classes and
some class must weigh more than 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import blobs

from linclass_gpu import LogisticRegression, SoftmaxRegression
from linclass_gpu.validation import check_in_range, check_positive

NUMPY_SCALARS = [np.float64(0.5), np.float32(0.5), np.int64(3), np.uint8(3), np.int32(1)]
NOT_NUMBERS = [True, False, np.True_, "1", None, [1], np.array([1.0]), 1 + 0j]


@pytest.mark.parametrize("value", NUMPY_SCALARS + [0.5, 3, 10**30])
def test_check_positive_takes_python_and_numpy_numbers(value):
    check_positive("rate", value)
    check_in_range("share", value / value, 0, 1)  # 1.0, of the value's own type


@pytest.mark.parametrize("value", [np.int64(5), np.uint16(5), 5, 10**400])
def test_integer_checks_take_python_and_numpy_integers_however_large(value):
    check_positive("epochs", value, integer=True)


@pytest.mark.parametrize("value", NOT_NUMBERS + [math.inf, -math.inf, math.nan, np.float64("inf"), np.float32("nan")])
def test_check_positive_refuses_bools_infinities_nan_and_non_numbers(value):
    with pytest.raises(ValueError, match=r"^rate must be a positive finite number, got "):
        check_positive("rate", value)
    with pytest.raises(ValueError, match=r"^tol must be a non-negative finite number, got "):
        check_positive("tol", value, allow_zero=True)
    with pytest.raises(ValueError, match=r"^share must be a number in \[0, 1\), got "):
        check_in_range("share", value, 0, 1, include_high=False)


@pytest.mark.parametrize("value", [2.0, np.float64(2.0), 2.5, np.True_, "2"])
def test_integer_checks_refuse_floats_bools_and_strings(value):
    with pytest.raises(ValueError, match=r"^batch_size must be a positive integer, got "):
        check_positive("batch_size", value, integer=True)


@pytest.mark.parametrize("value,low,high,include_low,include_high,inside", [
    (0.0, 0, 1, True, False, True), (1.0, 0, 1, True, False, False), (0.0, 0, 1, False, False, False),
    (np.float64(1.0), 0, 1, True, True, True), (np.float32(1.5), 0, 1, True, True, False),
    (-1, -1, 0, True, True, True),
])
def test_check_in_range_honours_open_and_closed_ends(value, low, high, include_low, include_high, inside):
    def check():
        return check_in_range("x", value, low, high, include_low=include_low, include_high=include_high)

    if inside:
        check()
    else:
        with pytest.raises(ValueError, match=r"^x must be a number in [\[(]"):
            check()


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
@pytest.mark.parametrize("parameters", [
    {"epochs": np.int64(2)}, {"batch_size": np.int32(64)}, {"learning_rate": np.float32(0.1)},
    {"alpha": np.float64(1e-3)}, {"input_scale": np.float64(0.5)}, {"tol": np.float64(1e-3)},
    {"n_iter_no_change": np.int64(2), "tol": 1e-3},
    {"momentum": np.float32(0.5)}, {"penalty": "elasticnet", "l1_ratio": np.float32(0.5)},
    {"early_stopping": True, "validation_fraction": np.float32(0.25)}, {"gamma": np.float32(0.5)},
], ids=lambda parameters: ",".join(parameters))
def test_numpy_scalar_hyperparameters_fit_as_python_numbers_do(rng, estimator, parameters):
    X, y = blobs(rng)
    as_python = {name: value.item() if isinstance(value, np.generic) else value for name, value in parameters.items()}
    with_numpy = estimator(random_state=0, **{"epochs": 2, "tol": None, **parameters}).fit(X, y)
    with_python = estimator(random_state=0, **{"epochs": 2, "tol": None, **as_python}).fit(X, y)
    np.testing.assert_array_equal(with_numpy.coef_, with_python.coef_)


@pytest.mark.parametrize("parameters,message", [
    ({"learning_rate": math.inf}, r"learning_rate must be a positive finite number, got inf"),
    ({"learning_rate": np.float64("inf")}, r"learning_rate must be a positive finite number"),
    ({"alpha": math.inf}, r"alpha must be a non-negative finite number, got inf"),
    ({"input_scale": math.inf}, r"input_scale must be a positive finite number, got inf"),
    ({"learning_rate": math.nan}, r"learning_rate must be a positive finite number, got nan"),
    ({"learning_rate": True}, r"learning_rate must be a positive finite number, got True"),
    ({"epochs": True}, r"epochs must be a positive integer, got True"),
    ({"alpha": False}, r"alpha must be a non-negative finite number, got False"),
    ({"batch_size": np.float64(32.0)}, r"batch_size must be a positive integer"),
    ({"momentum": True}, r"momentum must be"),
    ({"penalty": "elasticnet", "l1_ratio": True}, r"l1_ratio must be"),
    ({"gamma": True}, r"gamma must be"), ({"gamma": "0.5"}, r"gamma must be"),
    ({"power_t": math.inf}, r"power_t must be"), ({"step_size": True}, r"step_size must be"),
])
def test_infinite_nan_and_bool_hyperparameters_are_refused_at_fit(rng, parameters, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(**parameters).fit(*blobs(rng))


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_all_zero_class_weight_is_refused(rng, estimator):
    X, y = blobs(rng)
    with pytest.raises(ValueError, match=r"class_weight is 0 for every class in y \(\[0, 1, 2\]\), so every row "
                                         r"weighs 0 and there is nothing to fit"):
        estimator(class_weight={0: 0.0, 1: 0, 2: np.float32(0)}).fit(X, y)
    with pytest.raises(ValueError, match=r"class_weight is 0 for every class in y"):
        estimator(class_weight={0: 0.0, 1: 0.0, 2: 0.0}).partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.parametrize("class_weight,message", [
    ({3: 1.0}, r"class_weight names labels that are not classes: \[3\] \(the classes are \[0, 1, 2\]\)"),
    ({"0": 1.0}, r"class_weight names labels that are not classes: \['0'\]"),
    ({0: "heavy"}, r"class_weight values must be finite numbers >= 0, got 'heavy' for class 0"),
    ({0: math.inf}, r"class_weight values must be finite numbers >= 0, got inf for class 0"),
    ({0: None}, r"class_weight values must be finite numbers >= 0, got None for class 0"),
    ({0: True}, r"class_weight values must be finite numbers >= 0, got True for class 0"),
])
def test_class_weight_keys_must_be_classes_and_values_numbers(rng, class_weight, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(class_weight=class_weight).fit(*blobs(rng))


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_numpy_keys_and_values_in_class_weight_fit_as_python_ones_do(rng, estimator):
    X, y = blobs(rng)
    with_numpy = estimator(epochs=2, random_state=0, class_weight={np.int64(0): np.float64(5.0), np.uint8(2): 0})
    with_python = estimator(epochs=2, random_state=0, class_weight={0: 5.0, 2: 0.0})
    np.testing.assert_array_equal(with_numpy.fit(X, y).coef_, with_python.fit(X, y).coef_)
    labels = np.array(["a", "b", "c"])[y]
    with_str = estimator(epochs=2, random_state=0, class_weight={np.str_("a"): 5.0, "c": 0.0}).fit(X, labels)
    np.testing.assert_array_equal(with_str.coef_, with_python.coef_)
