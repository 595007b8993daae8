"""Checks at the API boundary: every bad input is refused here, before any work, with an error naming the problem."""

from __future__ import annotations

import functools
import sys
import warnings

import numpy as np

from .arrays import all_finite, array_kind, astype, first_non_finite, native, numeric_kind, to_numpy


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before ``fit`` (a ValueError and an AttributeError, as in scikit-learn)."""


class DataConversionWarning(UserWarning):
    """Input was accepted in another shape than documented (a column vector y used as (N,))."""


def as_sklearn(ours: type, sklearn_name: str) -> type:
    """``ours``, or, once scikit-learn is loaded, a subclass of both ``ours`` and scikit-learn's class of that name
    in ``sklearn.exceptions``, so code catching either catches it. scikit-learn is never imported for this (that
    takes seconds); code that catches its classes has imported it already."""
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    return ours if sklearn_exceptions is None else _subclass_of_both(ours, getattr(sklearn_exceptions, sklearn_name))


@functools.cache
def _subclass_of_both(ours: type, theirs: type) -> type:
    return type(ours.__name__, (ours, theirs), {"__module__": __name__, "__doc__": ours.__doc__})


def feature_names(X) -> np.ndarray | None:
    """The column names of a pandas-like frame when they are all strings (scikit-learn's rule), else None."""
    columns = getattr(X, "columns", None)
    if columns is None or not all(isinstance(column, str) for column in columns):
        return None
    return np.asarray(columns, dtype=object)


def check_feature_names(fitted_names: np.ndarray | None, X, estimator: str) -> None:
    """Refuse a frame whose column names differ from those seen in ``fit``; warn when only one side has names."""
    names = feature_names(X)
    if fitted_names is not None and names is not None:
        if not np.array_equal(names, fitted_names):
            raise ValueError(f"the feature names of X differ from those seen in fit: {names[:5].tolist()} vs "
                             f"{fitted_names[:5].tolist()}")
    elif fitted_names is not None:
        warnings.warn(f"X does not have valid feature names, but {estimator} was fitted with feature names",
                      UserWarning, stacklevel=3)
    elif names is not None:
        warnings.warn(f"X has feature names, but {estimator} was fitted without feature names", UserWarning,
                      stacklevel=3)


def check_features(X, *, dtype: np.dtype, name: str = "X", n_features: int | None = None,
                   estimator: str = "the model"):
    """Validate a feature matrix where it lives and bring it to the dtype training computes in.

    Parameters
    ----------
    X : array-like, NumPy, CuPy or torch array, or DLPack producer, shape (N, D)
        Numbers; uint8 stays uint8 (pixels: 4x fewer bytes than float32, converted on the fly), everything else is
        converted to ``dtype`` in its own library (a GPU array stays on its GPU).
    dtype : numpy dtype
        float32 or float64.
    name : str
        What to call ``X`` in messages.
    n_features : int, optional
        The feature count seen in ``fit``; a different one is an error.
    estimator : str
        Who saw that count in ``fit`` (its class name), for the message.

    Returns
    -------
    array of the same kind as ``X``, shape (N, D)

    Raises
    ------
    TypeError
        Non-numeric values (strings, objects that are not numbers), or a sparse matrix.
    ValueError
        Complex numbers, not 2-D, empty, NaN or infinite entries, or the wrong number of features.
    """
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a sparse matrix: sparse input is not supported (the kernels read dense rows); "
                        "pass a dense array, e.g. X.toarray()")
    kind = array_kind(X)
    X = native(X, kind)
    if numeric_kind(X) == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if numeric_kind(X) == "O":  # e.g. a frame of mixed columns: numbers held as Python objects are fine
        X = _object_to_float(X, name, dtype)
    if numeric_kind(X) not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got an array of shape {tuple(X.shape)}. "
                         "Reshape your data: X.reshape(-1, 1) for a single feature, X.reshape(1, -1) for one sample")
    if X.shape[0] == 0 or X.shape[1] == 0:
        empty = "sample(s)" if X.shape[0] == 0 else "feature(s)"
        raise ValueError(f"{name} is empty: found 0 {empty} (shape={tuple(X.shape)}) while a minimum of 1 is "
                         "required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but {estimator} is expecting {n_features} features as "
                         "input")
    if str(X.dtype).removeprefix("torch.") != "uint8":
        given, X = X, astype(X, kind, dtype)
        if not all_finite(X, kind):
            row, column, value = first_non_finite(X)
            original = float(to_numpy(given[row:row + 1, column]).item())
            if np.isfinite(original):
                raise ValueError(f"{name} has values beyond the {np.dtype(dtype).name} range (row {row}, column "
                                 f"{column}: {original:g}); scale the features or use dtype='float64'")
            raise ValueError(f"{name} contains NaN or infinity (first at row {row}, column {column}: {value})")
    return X


def _object_to_float(X: np.ndarray, name: str, dtype: np.dtype) -> np.ndarray:
    """An object array of numbers as ``dtype``; anything else (strings, None) is a TypeError naming it."""
    try:
        return X.astype(dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must hold real numbers; its object entries do not convert: {error}") from None


def check_labels(y, n_samples: int, name: str = "y") -> np.ndarray:
    """Validate class labels of any values (ints, strings, bools), of any array kind, for ``n_samples`` rows.

    A column vector (N, 1) is accepted as (N,).

    Returns
    -------
    ndarray, shape (N,)

    Raises
    ------
    ValueError
        Wrong shape or length, NaN, or continuous (non-integral float) values.
    """
    if y is None:
        raise ValueError(f"this estimator requires {name} to be passed, but the target y is None")
    y = to_numpy(y)  # labels are small: they are encoded on the host, then placed on the device as class ids
    if y.dtype.kind == "O" and all(isinstance(label, str) for label in y.ravel()):
        y = y.astype(str)  # strings held as objects (a pandas string column) become a NumPy string array
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(f"A column-vector {name} was passed when a 1d array was expected; it is used as (n_samples,)",
                      as_sklearn(DataConversionWarning, "DataConversionWarning"), stacklevel=3)
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,) class labels, got an array of shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"X and {name} have different lengths: {n_samples} rows in X, {y.shape[0]} labels")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or infinity")
        if not np.array_equal(y, np.round(y)):
            raise ValueError(f"{name} holds continuous values (e.g. {y[y != np.round(y)][0]}); class labels expected")
    return y


def check_label_indicator(Y, n_samples: int, name: str = "y") -> np.ndarray:
    """Validate a multilabel indicator matrix: ``Y_ik = 1`` when row ``i`` carries label ``k``, else 0.

    Returns
    -------
    ndarray of uint8, shape (N, L)

    Raises
    ------
    ValueError
        Not 2-D, wrong length, fewer than 2 label columns, or an entry other than 0 and 1 (NaN included).
    """
    Y = to_numpy(Y)
    if Y.ndim != 2 or Y.shape[1] < 2:
        raise ValueError(f"{name} must be an indicator matrix (n_samples, n_labels) with at least 2 labels, got "
                         f"shape {Y.shape}")
    if Y.shape[0] != n_samples:
        raise ValueError(f"X and {name} have different lengths: {n_samples} rows in X, {Y.shape[0]} rows of labels")
    if Y.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold 0/1 label indicators, got dtype {Y.dtype}")
    is_binary = (Y == 0) | (Y == 1)
    if not is_binary.all():
        raise ValueError(f"{name} must hold only 0 and 1 (label absent/present); found {Y[~is_binary][0]!r}")
    return Y.astype(np.uint8)


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    """Validate per-row weights: None, or ``n_samples`` finite non-negative numbers (any array kind).

    Returns
    -------
    ndarray of float64, shape (N,), or None
    """
    if sample_weight is None:
        return None
    weights = to_numpy(sample_weight)
    if weights.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must hold numbers, got dtype {weights.dtype}")
    weights = weights.astype(np.float64)
    if weights.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), one weight per row, got {weights.shape}")
    if not np.isfinite(weights).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (weights < 0).any():
        raise ValueError(f"sample_weight must be >= 0, found {weights.min()}")
    if n_samples and not weights.any():
        raise ValueError("sample_weight is zero for every row: there is nothing to fit")
    return weights


def class_weights(class_weight, classes: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
    """Each class's weight, shape (C,): from a dict {label: weight}, or "balanced" (``N / (C · count)``, as in
    scikit-learn), or None.

    Parameters
    ----------
    class_weight : dict, "balanced" or None
    classes : ndarray, shape (C,)
    targets : ndarray, shape (N,)
        Class indices of the training rows.
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str) and class_weight == "balanced":
        counts = np.bincount(targets.astype(np.int64), minlength=len(classes))
        return len(targets) / (len(classes) * np.maximum(counts, 1))
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, got {class_weight!r}")
    unknown = [label for label in class_weight if label not in set(classes.tolist())]
    if unknown:
        raise ValueError(f"class_weight names labels that are not classes: {unknown[:5]}")
    weights = np.array([float(class_weight.get(label, 1.0)) for label in classes.tolist()])
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise ValueError(f"class_weight values must be finite and >= 0, got {class_weight}")
    return weights


def encode_labels(y: np.ndarray, classes: np.ndarray | None = None, name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Sorted class labels and each row's index among them.

    Parameters
    ----------
    y : ndarray, shape (N,)
    classes : ndarray, optional
        The known classes (sorted, as ``classes_``); labels of ``y`` outside them are an error. By default the
        distinct values of ``y``.

    Returns
    -------
    classes : ndarray, shape (C,)
    indices : ndarray of int, shape (N,)
    """
    if classes is None:
        return np.unique(y, return_inverse=True)
    unseen = np.setdiff1d(y, classes)
    if unseen.size:
        raise ValueError(f"{name} has labels not among the classes {classes[:10].tolist()}: {unseen[:5].tolist()}")
    return classes, np.searchsorted(classes, y)


def check_positive(name: str, value, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value`` is a (non-negative if ``allow_zero``) number, an integer if asked."""
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok_type or not (value >= 0 if allow_zero else value > 0):
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")
