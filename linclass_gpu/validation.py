"""Checks at the API boundary: every bad input is refused here, before any work, with an error naming the problem."""

from __future__ import annotations

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before ``fit`` (a ValueError and an AttributeError, as in scikit-learn)."""


def check_features(X, *, dtype: np.dtype, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """Validate a feature matrix and bring it to the dtype training computes in.

    Parameters
    ----------
    X : array-like, shape (N, D)
        Numbers; uint8 stays uint8 (pixels: 4x fewer bytes than float32, converted on the fly), everything else is
        converted to ``dtype``.
    dtype : numpy dtype
        float32 or float64.
    name : str
        What to call ``X`` in messages.
    n_features : int, optional
        The feature count seen in ``fit``; a different one is an error.

    Returns
    -------
    ndarray, shape (N, D), C-contiguous

    Raises
    ------
    TypeError
        Non-numeric values (strings, objects).
    ValueError
        Not 2-D, empty, NaN or infinite entries, or the wrong number of features.
    """
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got an array of shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}; at least one sample and one feature are needed")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but the model was fitted with {n_features}")
    if X.dtype != np.uint8:
        X = X.astype(dtype, copy=False)
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        row, column = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{name} contains NaN or infinity (first at row {row}, column {column}: {X[row, column]})")
    return np.ascontiguousarray(X)


def check_labels(y, n_samples: int, name: str = "y") -> np.ndarray:
    """Validate class labels of any values (ints, strings, bools) for ``n_samples`` rows.

    A column vector (N, 1) is accepted as (N,).

    Returns
    -------
    ndarray, shape (N,)

    Raises
    ------
    ValueError
        Wrong shape or length, NaN, or continuous (non-integral float) values.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
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


def check_positive(name: str, value, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value`` is a (non-negative if ``allow_zero``) number, an integer if asked."""
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok_type or not (value >= 0 if allow_zero else value > 0):
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")
