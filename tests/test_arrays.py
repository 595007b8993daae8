"""Arrays in, arrays out: NumPy, torch and DLPack inputs; results in the caller's kind; layouts and extremes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DLPackOnly

from linclass_gpu import LogisticRegression, SoftmaxRegression
from linclass_gpu.arrays import array_kind, common_kind, convert, to_numpy

torch = pytest.importorskip("torch")


@pytest.fixture
def problem(rng):
    X = rng.normal(size=(120, 6)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def test_kinds_are_recognised():
    assert array_kind(np.zeros(2)) == array_kind([1, 2]) == array_kind(DLPackOnly(np.zeros(2))) == "numpy"
    assert array_kind(torch.zeros(2)) == "torch"
    assert common_kind(torch.zeros(2), None, names=("X", "y")) == "torch"


def test_torch_inputs_give_torch_outputs_equal_to_numpy_ones(problem):
    X, y = problem
    reference = SoftmaxRegression(epochs=3, random_state=0).fit(X, y)
    model = SoftmaxRegression(epochs=3, random_state=0).fit(torch.from_numpy(X), torch.from_numpy(y))
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    proba, labels = model.predict_proba(torch.from_numpy(X)), model.predict(torch.from_numpy(X))
    assert isinstance(proba, torch.Tensor) and isinstance(labels, torch.Tensor)
    np.testing.assert_array_equal(proba.numpy(), reference.predict_proba(X))
    np.testing.assert_array_equal(labels.numpy(), reference.predict(X))
    assert isinstance(model.decision_function(torch.from_numpy(X)), torch.Tensor)
    assert model.score(torch.from_numpy(X), torch.from_numpy(y)) == reference.score(X, y)


def test_output_type_overrides_the_input_kind(problem):
    X, y = problem
    model = SoftmaxRegression(epochs=2, output_type="numpy").fit(torch.from_numpy(X), torch.from_numpy(y))
    assert isinstance(model.predict_proba(torch.from_numpy(X)), np.ndarray)
    assert isinstance(model.set_params(output_type="torch").predict(X), torch.Tensor)
    with pytest.raises(ValueError, match="output_type"):
        model.set_params(output_type="jax").predict(X)


def test_mixed_kinds_in_one_call_are_refused(problem):
    X, y = problem
    with pytest.raises(TypeError, match="X is torch, y is numpy"):
        SoftmaxRegression().fit(torch.from_numpy(X), y)
    with pytest.raises(TypeError, match="validation X is torch"):
        SoftmaxRegression().fit(X, y, validation_data=(torch.from_numpy(X), y))


def test_dlpack_producers_and_low_precision_tensors_are_accepted(problem):
    X, y = problem
    reference = SoftmaxRegression(epochs=2, random_state=0).fit(X, y)
    model = SoftmaxRegression(epochs=2, random_state=0).fit(DLPackOnly(X), y)
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    half = SoftmaxRegression(epochs=2, random_state=0).fit(torch.from_numpy(X).to(torch.bfloat16),
                                                           torch.from_numpy(y))
    assert half.score(X, y) > 0.8


def test_string_labels_come_back_as_numpy(problem):
    X, y = problem
    names = np.array(["low", "mid", "high"])[y]
    model = SoftmaxRegression(epochs=2).fit(torch.from_numpy(X), list(names))
    predictions = model.predict(torch.from_numpy(X))
    assert isinstance(predictions, np.ndarray) and set(predictions) <= set(names)


def test_convert_round_trips():
    a = np.arange(6.0).reshape(2, 3)
    assert isinstance(convert(a, "torch"), torch.Tensor)
    np.testing.assert_array_equal(to_numpy(convert(a, "torch")), a)
    assert convert(a, "numpy") is a


@pytest.mark.parametrize("layout", ["fortran", "strided rows", "strided columns", "read-only memmap"])
def test_memory_layouts_train_the_same_model(tmp_path, problem, layout):
    X, y = problem
    wide = np.repeat(X, 2, axis=1)
    if layout == "fortran":
        given, expected_X, expected_y = np.asfortranarray(X), X, y
    elif layout == "strided rows":
        given, expected_X, expected_y = np.repeat(X, 2, axis=0)[::2], X, y
    elif layout == "strided columns":
        given, expected_X, expected_y = wide[:, ::2], X, y
    else:
        np.save(tmp_path / "X.npy", X)
        given, expected_X, expected_y = np.load(tmp_path / "X.npy", mmap_mode="r"), X, y
    reference = SoftmaxRegression(epochs=2, random_state=0).fit(expected_X, expected_y)
    model = SoftmaxRegression(epochs=2, random_state=0).fit(given, y)
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    np.testing.assert_array_equal(model.predict(given), reference.predict(expected_X))


def test_values_beyond_float32_range_are_named(problem):
    X, y = problem
    big = X.astype(np.float64)
    big[3, 2] = 1e39
    with pytest.raises(ValueError, match=r"beyond the float32 range.*row 3, column 2.*float64"):
        SoftmaxRegression().fit(big, y)
    assert SoftmaxRegression(epochs=1, dtype="float64", learning_rate=1e-80).fit(big, y).n_iter_ == 1


def test_non_finite_tensor_values_are_found_where_they_live(problem):
    X, y = problem
    X = X.copy()
    X[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity.*row 5, column 1"):
        LogisticRegression().fit(torch.from_numpy(X), torch.from_numpy(y > 0))
