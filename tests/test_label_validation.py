"""Class labels: a missing, mixed or unsupported label is a ValueError naming its row on every path that takes
labels (fit, partial_fit's y and classes, validation_data, score); labels of one type round-trip through encoding."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import blobs

from linclass_gpu import LogisticRegression, SoftmaxRegression
from linclass_gpu.validation import check_labels, encode_labels

pd = pytest.importorskip("pandas")

N_ROWS, BAD_ROW = 300, 7


def _with_value_at(labels: np.ndarray, row: int, value) -> np.ndarray:
    """``labels`` as an object array with ``value`` at ``row``."""
    held = labels.astype(object)
    held[row] = value
    return held


# Each maker turns int class ids (N,) into a label container with a missing value at BAD_ROW.
MISSING = {
    "object NaN": lambda y: _with_value_at(y, BAD_ROW, np.nan),
    "object None": lambda y: _with_value_at(y, BAD_ROW, None),
    "object pd.NA": lambda y: _with_value_at(y, BAD_ROW, pd.NA),
    "object NaT": lambda y: _with_value_at(y, BAD_ROW, pd.NaT),
    "object str with None": lambda y: _with_value_at(np.array(["a", "b", "c"])[y], BAD_ROW, None),
    "float NaN": lambda y: np.where(np.arange(len(y)) == BAD_ROW, np.nan, y.astype(float)),
    "pandas Int64 NA": lambda y: pd.array(_with_value_at(y, BAD_ROW, None), dtype="Int64"),
    "pandas string NA": lambda y: pd.array(_with_value_at(y.astype(str), BAD_ROW, None), dtype="string"),
    "pandas category NaN": lambda y: pd.Series(_with_value_at(y, BAD_ROW, None), dtype="category"),
    "pandas boolean NA": lambda y: pd.array(_with_value_at(y > 0, BAD_ROW, None), dtype="boolean"),
    "column vector": lambda y: _with_value_at(y, BAD_ROW, np.nan)[:, np.newaxis],
}


@pytest.mark.filterwarnings("ignore:A column-vector")
@pytest.mark.parametrize("make", MISSING.values(), ids=MISSING.keys())
def test_a_missing_label_is_refused_naming_its_row_whatever_the_dtype(rng, make):
    _, y = blobs(rng, n=N_ROWS)
    with pytest.raises(ValueError, match=rf"^y has a missing label \(.*\) at row {BAD_ROW}: every row needs"):
        check_labels(make(y), N_ROWS)


def _fit(estimator, X, y, bad):
    estimator.fit(X, bad)


def _partial_fit_y(estimator, X, y, bad):
    estimator.partial_fit(X, bad, classes=np.unique(y))


def _validation_data(estimator, X, y, bad):
    estimator.fit(X, y, validation_data=(X, bad))


def _score(estimator, X, y, bad):
    estimator.fit(X, y).score(X, bad)


PATHS = {"fit": (_fit, "y"), "partial_fit y": (_partial_fit_y, "y"), "validation_data": (_validation_data,
         "validation y"), "score": (_score, "y")}


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
@pytest.mark.parametrize("path", PATHS, ids=PATHS.keys())
@pytest.mark.parametrize("missing", ["object NaN", "object pd.NA", "pandas Int64 NA", "float NaN"])
def test_every_path_refuses_a_missing_label_naming_its_row(rng, estimator, path, missing):
    X, y = blobs(rng, n=N_ROWS)
    call, name = PATHS[path]
    with pytest.raises(ValueError, match=rf"^{name} has a missing label .* at row {BAD_ROW}"):
        call(estimator(epochs=1, tol=None, random_state=0), X, y, MISSING[missing](y))


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
@pytest.mark.parametrize("missing", [np.nan, None, pd.NA])
def test_partial_fit_refuses_a_missing_class(rng, estimator, missing):
    X, y = blobs(rng, n=N_ROWS)
    with pytest.raises(ValueError, match=r"^classes has a missing label .* at row 2"):
        estimator(epochs=1, tol=None).partial_fit(X, y, classes=np.array([0, 1, missing, 2], dtype=object))


@pytest.mark.parametrize("labels,message", [
    (np.array(["a", 1, "b"], dtype=object), r"y mixes str and int labels \(row 0: 'a', row 1: 1\)"),
    (np.array([1, 2.0, "x"], dtype=object), r"y mixes int and str labels \(row 0: 1, row 2: 'x'\)"),
    (np.array([True, 1, 0], dtype=object), r"y mixes bool and int labels"),
    (np.array([b"a", "a", b"b"], dtype=object), r"y mixes bytes and str labels"),
    (np.array([1 + 1j, 2], dtype=object), r"y holds a complex at row 0"),
    (np.array([1 + 1j, 2, 3]), r"y has dtype complex128, which class labels cannot have"),
    (np.array([(1, 2), 3, 4], dtype=object), r"y holds a tuple at row 0"),
    (np.array(["2020-01-01", "2020-01-02", "2020-01-03"], dtype="datetime64[D]"), r"y has dtype datetime64"),
    (np.array([1.0, 2.0, np.inf]), r"y has an infinite label at row 2"),
    (np.array([1.0, 2.5, 3.0]), r"y holds 2.5 at row 1, which is not a whole number: .* continuous"),
    (np.array(["a", "a\x00", "b"], dtype=object), r"y holds 'a\\x00' at row 1, which a NumPy <U2 array stores as 'a'"),
    (np.array([2**53 + 1, 0.5, 1], dtype=object), r"y holds 9007199254740993 at row 0, which a NumPy float64 array"),
])
def test_mixed_complex_and_other_labels_are_refused_by_name(labels, message):
    with pytest.raises(ValueError, match=message):
        check_labels(labels, len(labels))


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_fit_on_mixed_labels_says_so_instead_of_failing_to_sort(rng, estimator):
    X, y = blobs(rng, n=N_ROWS)
    labels = np.array(["a", "b", 3], dtype=object)[y]
    with pytest.raises(ValueError, match=r"y mixes (int and str|str and int) labels \(row \d+: "):
        estimator(epochs=1, tol=None).fit(X, labels)


# Containers of one label type without a missing value, and the labels each must come back as.
ACCEPTED = {
    "object ints": (np.array([3, -1, 3, 7], dtype=object), [3, -1, 3, 7]),
    "object NumPy and Python ints": (np.array([np.int8(3), -1, np.uint64(7)], dtype=object), [3, -1, 7]),
    "object ints and whole floats": (np.array([1, 2.0, 1], dtype=object), [1.0, 2.0, 1.0]),
    "object strings": (np.array(["b", np.str_("a"), "b"], dtype=object), ["b", "a", "b"]),
    "object bools": (np.array([True, np.False_, True], dtype=object), [True, False, True]),
    "object bytes": (np.array([b"x", b"y"], dtype=object), [b"x", b"y"]),
    "object ints beyond 64 bits": (np.array([2**70, 1], dtype=object), [2**70, 1]),
    "pandas Int64": (pd.array([5, 2, 5], dtype="Int64"), [5, 2, 5]),
    "pandas string": (pd.array(["u", "v"], dtype="string"), ["u", "v"]),
    "pandas boolean": (pd.array([True, False], dtype="boolean"), [True, False]),
    "pandas category": (pd.Series(["q", "p", "q"], dtype="category"), ["q", "p", "q"]),
    "float whole numbers": (np.array([2.0, -0.0, 2.0]), [2.0, 0.0, 2.0]),
}


@pytest.mark.parametrize("labels,expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_labels_of_one_type_round_trip_through_encoding(labels, expected):
    checked = check_labels(labels, len(expected))
    assert checked.dtype.kind in "biufUSO"
    classes, indices = encode_labels(checked)
    assert classes[indices].tolist() == expected
    assert classes.tolist() == sorted(set(expected))


def test_a_float_labels_file_is_refused_in_words_naming_it():
    with pytest.raises(ValueError, match=r"^labels \(y\.npy\) holds 0\.25 at row 1, which is not a whole number: "
                                         r"class labels are integers, strings, bools or whole-number floats"):
        check_labels(np.array([1.0, 0.25]), 2, name="labels (y.npy)")


def test_encoding_against_known_classes_names_the_unseen_labels():
    classes = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"y has labels not among the classes \[0, 1, 2\] the model was fitted with: "
                                         r"\[5, 9\] \(first at row 1\)"):
        encode_labels(np.array([0, 9, 5, 1]), classes)
    with pytest.raises(ValueError, match=r"not among the classes .*: \['0', '1'\] \(first at row 0\)"):
        encode_labels(np.array(["0", "1"]), np.array([1, 2]))  # strings never equal numbers
    _, indices = encode_labels(np.array([2.0, 0.0]), classes)
    np.testing.assert_array_equal(indices, [2, 0])


@pytest.mark.parametrize("estimator", [SoftmaxRegression, LogisticRegression])
def test_scoring_against_labels_never_seen_in_fit_is_refused(rng, estimator):
    X, y = blobs(rng, n=N_ROWS)
    model = estimator(epochs=1, tol=None, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=r"y has labels not among the classes \[0, 1, 2\] .*: \[10, 11, 12\]"):
        model.score(X, y + 10)


@pytest.mark.parametrize("label_map", [None, lambda labels: labels == 1], ids=["softmax", "one against the rest"])
def test_a_float_labels_file_is_refused_naming_it_and_the_row_in_the_file(tmp_path, label_map):
    from linclass_gpu.streaming import open_stream

    features, labels = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(features, np.zeros((6, 2), dtype=np.float32))
    np.save(labels, np.array([0.0, 1.0, 2.0, 1.0, 0.5, 2.0]))
    with pytest.raises(ValueError, match=rf"^labels \({labels}\) holds 0\.5 at row 4, which is not a whole number"):
        open_stream(features, labels, chunk_rows=2, label_map=label_map)
