"""Checks at the API boundary: every bad input is refused here, before any work, with an error naming the problem."""

from __future__ import annotations

import functools
import math
import sys
import warnings

import numpy as np

from .arrays import (
    all_finite,
    array_kind,
    astype,
    first_non_finite,
    is_sparse_rows,
    is_torch_sparse,
    native,
    numeric_kind,
    to_numpy,
)


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
                   estimator: str = "the model", keep_dtypes: tuple[str, ...] = ("uint8",)):
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
    keep_dtypes : tuple of str
        Dtypes left as they are (the backend reads them as stored, see ``Backend.stored_feature_dtypes``); still
        checked to be finite.

    Returns
    -------
    array of the same kind as ``X``, shape (N, D)
        A scipy.sparse ``X`` or a torch sparse tensor comes back as a ``scipy.sparse.csr_array`` of ``dtype`` on the
        host (other formats converted once).

    Raises
    ------
    TypeError
        Non-numeric values (strings, objects that are not numbers).
    ValueError
        Complex numbers, not 2-D, empty, NaN or infinite entries, or the wrong number of features.
    """
    if is_sparse_rows(X) or is_torch_sparse(X):  # CSR for the sparse step; scipy is imported only here
        from .backends.sparse_step import as_csr

        return as_csr(X, dtype, name=name, n_features=n_features, estimator=estimator)
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
    stored = str(X.dtype).removeprefix("torch.")
    if stored != "uint8":  # uint8 is finite by construction
        given, X = X, X if stored in keep_dtypes else astype(X, kind, dtype)
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
    """Validate class labels of any array kind for ``n_samples`` rows, and bring them to one NumPy type that sorts.

    The one check every path that takes class labels goes through (``fit``'s ``y`` and ``validation_data``,
    ``partial_fit``'s ``y`` and ``classes``, ``score``). A column vector (N, 1) is accepted as (N,). Python objects
    (pandas object, nullable and categorical columns) become strings, bytes, bools or numbers when they all are of
    that one type.

    Parameters
    ----------
    y : array-like, shape (N,) or (N, 1)
        Integers, strings, bytes, bools, or floats that are whole numbers.
    n_samples : int
        The rows of ``X`` (``len(classes)`` when checking ``classes`` itself).
    name : str
        What to call ``y`` in messages (the argument, or the file it came from).

    Returns
    -------
    ndarray, shape (N,)
        Of dtype str, bytes, bool, integer or float (object only for integers beyond 64 bits).

    Raises
    ------
    ValueError
        Wrong shape or length; a missing label (None, NaN, pandas' NA or NaT), naming its row; an infinite or
        fractional float; strings mixed with numbers, or bools with numbers (``True == 1`` would merge them);
        complex numbers or any other type.
    """
    if y is None:
        raise ValueError(f"this estimator requires {name} to be passed, but the target y is None")
    if isinstance(y, (list, tuple)):  # as objects: NumPy would turn [1, None] to objects but ["a", nan] to "nan"
        y = np.array(y, dtype=object)
    y = to_numpy(y)  # labels are small: they are encoded on the host, then placed on the device as class ids
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(f"A column-vector {name} was passed when a 1d array was expected; it is used as (n_samples,)",
                      as_sklearn(DataConversionWarning, "DataConversionWarning"), stacklevel=3)
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,) class labels, got an array of shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"X and {name} have different lengths: {n_samples} rows in X, {y.shape[0]} labels")
    if y.dtype.kind in "OT":  # Python objects, or NumPy's variable-width strings (which may hold a missing value)
        y = _labels_from_objects(y, name)
    if y.dtype.kind == "f":
        _check_float_labels(y, name)
    elif y.dtype.kind not in "biuUSO":
        raise ValueError(f"{name} has dtype {y.dtype}, which class labels cannot have: they are {_LABEL_TYPES}")
    return y


_LABEL_TYPES = "integers, strings, bools or whole-number floats"
_MISSING_ADVICE = "every row needs a class label: drop the rows without one or fill them in"
# The label types an object array may hold, by their group: labels of one group compare and sort with each other,
# strings and numbers do not, and bools equal the numbers 0 and 1 (mixed, True and 1 would become one class).
_LABEL_GROUPS = {"str": "str", "bytes": "bytes", "bool": "bool", "int": "number", "float": "number"}


def _labels_from_objects(y: np.ndarray, name: str) -> np.ndarray:
    """Labels held as Python objects (N,) as an array of their one type: str, bytes, bool, or numbers (int64 or
    float64; object for integers beyond 64 bits); a missing label, another type or a mix is a ValueError naming the
    first row concerned."""
    values = y.tolist()
    first_row: dict[str, int] = {}  # each label type found -> the first row holding it
    for row, value in enumerate(values):
        first_row.setdefault(_label_type(value), row)
    if "missing" in first_row:
        row = first_row["missing"]
        raise ValueError(f"{name} has a missing label ({values[row]!r}) at row {row}: {_MISSING_ADVICE}")
    for label_type, row in first_row.items():
        if label_type not in _LABEL_GROUPS:
            raise ValueError(f"{name} holds a {label_type} at row {row} ({values[row]!r}); class labels are "
                             f"{_LABEL_TYPES}")
    types = sorted(first_row, key=first_row.get)
    mixed = [label_type for label_type in types if _LABEL_GROUPS[label_type] != _LABEL_GROUPS[types[0]]]
    if mixed:
        rows = first_row[types[0]], first_row[mixed[0]]
        raise ValueError(f"{name} mixes {types[0]} and {mixed[0]} labels (row {rows[0]}: {values[rows[0]]!r}, row "
                         f"{rows[1]}: {values[rows[1]]!r}), which do not compare: give every label one type, e.g. "
                         "all strings (y.astype(str))")
    if types == ["str"]:
        plain = y.astype(str)
    elif types == ["int"]:
        plain = _integer_array([int(value) for value in values])
    else:  # bools, bytes, or ints mixed with floats (as float64)
        plain = np.array(values)
    changed = plain != y  # NumPy drops a string's trailing NULs; float64 rounds an int beyond 2**53
    if changed.any():
        row = int(np.argmax(changed))
        raise ValueError(f"{name} holds {values[row]!r} at row {row}, which a NumPy {plain.dtype} array stores as "
                         f"{plain[row].item()!r}, so distinct labels could become one class: give the labels one "
                         "type that holds them exactly (all integers, or all strings without trailing NULs)")
    return plain


def _integer_array(values: list[int]) -> np.ndarray:
    """Python ints as an int64 array, else uint64, else (beyond 64 bits) an object array: exact in every case, where
    ``np.array`` makes float64 of ints that fit neither (``[2**64 - 1, -1]``)."""
    for dtype in (np.int64, np.uint64):
        try:
            return np.array(values, dtype=dtype)
        except OverflowError:
            continue
    return np.array(values, dtype=object)


def _label_type(value) -> str:
    """How a label counts: "str", "bytes", "bool", "int", "float", "missing" (None, NaN, pandas' NA, NaT), or the
    name of another type."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "missing" if math.isnan(value) else "float"
    pandas = sys.modules.get("pandas")  # pd.NA and pd.NaT exist only once pandas is loaded
    if value is None or (pandas is not None and (value is pandas.NA or value is pandas.NaT)):
        return "missing"
    if isinstance(value, (np.datetime64, np.timedelta64)) and np.isnat(value):
        return "missing"
    return type(value).__name__


def _check_float_labels(y: np.ndarray, name: str) -> None:
    """Refuse a float label array (N,) with a NaN (a missing label), an infinity or a fraction, naming the row."""
    for problem, where, advice in (("a missing label (NaN)", np.isnan(y), _MISSING_ADVICE),
                                   ("an infinite label", np.isinf(y), f"class labels are {_LABEL_TYPES}")):
        if where.any():
            raise ValueError(f"{name} has {problem} at row {int(np.argmax(where))}: {advice}")
    fractional = y != np.round(y)
    if fractional.any():
        row = int(np.argmax(fractional))
        raise ValueError(f"{name} holds {y[row].item()!r} at row {row}, which is not a whole number: class labels are "
                         f"{_LABEL_TYPES}, while these look like continuous values (a regression target), which a "
                         "classifier cannot fit")


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
        A dict's keys are labels among ``classes`` (NumPy scalars as well as Python values, compared by value); a
        class it leaves out weighs 1; its values are finite numbers >= 0.
    classes : ndarray, shape (C,)
    targets : ndarray, shape (N,)
        Class indices of the training rows.

    Raises
    ------
    ValueError
        Another kind of ``class_weight``, a key that is not a class (as in scikit-learn), a weight that is not a
        finite number >= 0, or weights that are 0 for the class of every row (nothing would be fitted).
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str) and class_weight == "balanced":
        counts = np.bincount(targets.astype(np.int64), minlength=len(classes))
        return len(targets) / (len(classes) * np.maximum(counts, 1))
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be None, 'balanced' or a dict {{label: weight}}, got {class_weight!r}")
    known = set(classes.tolist())
    unknown = [label for label in class_weight if label not in known]
    if unknown:
        raise ValueError(f"class_weight names labels that are not classes: {unknown[:5]} (the classes are "
                         f"{classes[:10].tolist()})")
    for label, weight in class_weight.items():
        try:
            check_positive("class_weight", weight, allow_zero=True)
        except ValueError:
            raise ValueError(f"class_weight values must be finite numbers >= 0, got {weight!r} for class "
                             f"{label!r}") from None
    weights = np.array([float(class_weight.get(label, 1.0)) for label in classes.tolist()])
    present = np.unique(targets.astype(np.int64))
    if present.size and not weights[present].any():
        raise ValueError(f"class_weight is 0 for every class in y ({classes[present][:10].tolist()}), so every row "
                         "weighs 0 and there is nothing to fit")
    return weights


def encode_labels(y: np.ndarray, classes: np.ndarray | None = None, name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Sorted class labels and each row's index among them.

    Parameters
    ----------
    y : ndarray, shape (N,)
        Labels as :func:`check_labels` returns them.
    classes : ndarray, optional
        The known classes (sorted, as ``classes_``): encoding a validation set or the labels ``score`` compares
        against, where a label outside them is an error. By default the distinct values of ``y``.
    name : str
        What to call ``y`` in messages.

    Returns
    -------
    classes : ndarray, shape (C,)
    indices : ndarray of int, shape (N,)
    """
    if classes is None:
        return np.unique(y, return_inverse=True)
    known = np.isin(y, classes)  # False throughout when the types differ (string labels against numeric classes)
    if not known.all():
        row = int(np.argmin(known))
        raise ValueError(f"{name} has labels not among the classes {classes[:10].tolist()} the model was fitted "
                         f"with: {np.unique(y[~known])[:5].tolist()} (first at row {row}); a model cannot predict "
                         "a class it never saw")
    return classes, np.searchsorted(classes, y)


def check_positive(name: str, value, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite positive (non-negative if ``allow_zero``) number, an integer if
    asked (see :func:`check_in_range` for what counts as a number)."""
    wanted = f"a {'non-negative' if allow_zero else 'positive'} {'integer' if integer else 'finite number'}"
    _check_number(name, value, integer, wanted, lambda number: number >= 0 if allow_zero else number > 0)


def check_in_range(name: str, value, low: float, high: float, *, include_low: bool = True,
                   include_high: bool = True, integer: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number in the interval from ``low`` to ``high``.

    A number is a Python or NumPy scalar (``np.float64(0.9)`` as well as ``0.9``), an integer if ``integer``; a bool
    is not, although Python counts it as one (``momentum=True`` is a mistake, not 1.0).

    Parameters
    ----------
    name : str
        The parameter, for the message.
    value : object
    low, high : float
        The interval's ends; each is included unless ``include_low`` / ``include_high`` is False.
    integer : bool
        Accept integers only.
    """
    interval = f"{'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"
    _check_number(name, value, integer, f"{'an integer' if integer else 'a number'} in {interval}",
                  lambda number: (low <= number if include_low else low < number)
                  and (number <= high if include_high else number < high))


def _check_number(name: str, value, integer: bool, wanted: str, accepts) -> None:
    """Raise ValueError saying ``name`` must be ``wanted`` unless ``value`` is a finite real number (an integer if
    ``integer``), of a Python or NumPy numeric type other than bool, for which ``accepts(value)`` holds."""
    types = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    is_number = isinstance(value, types) and not isinstance(value, (bool, np.bool_))
    # An int is finite however large (math.isfinite would overflow converting it to float).
    if not (is_number and (isinstance(value, (int, np.integer)) or math.isfinite(value)) and accepts(value)):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
