"""Property tests of label checking and encoding: random label arrays of many dtypes and containers (NumPy, object,
lists, pandas nullable and categorical, torch), with and without missing values. Either the labels come back exactly
from their encoding, or a ValueError names the first row at fault."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from linclass_gpu.validation import check_labels, encode_labels

pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")

EXAMPLES = 1000
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)

# NumPy's fixed-width strings drop trailing NULs, so the label pools of NumPy string arrays leave them out.
TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=4)
BYTES = st.binary(max_size=4).filter(lambda value: not value.endswith(b"\x00"))

# Label pools: (values, the NumPy dtype they are stored in).
POOLS = {
    "int8": (st.integers(-128, 127), "int8"),
    "uint64": (st.integers(0, 2**64 - 1), "uint64"),
    "int64": (st.integers(-2**63, 2**63 - 1), "int64"),
    "float32": (st.integers(-2**24, 2**24).map(float), "float32"),
    "float64": (st.integers(-2**53, 2**53).map(float), "float64"),
    "bool": (st.booleans(), "bool"),
    "str": (TEXT, "str"),
    "bytes": (BYTES, "bytes"),
}


def _object_array(values: list) -> np.ndarray:
    held = np.empty(len(values), dtype=object)
    held[:] = values
    return held


def _numpy(values, dtype):
    return np.array(values, dtype=dtype)


def _torch(values, dtype):
    return torch.tensor(np.array(values, dtype=dtype))


# Containers: how to build one from a pool's values, and the missing values it can hold (none: it cannot).
CONTAINERS = {
    "numpy": (_numpy, {"float32": (np.nan,), "float64": (np.nan,)}),
    "object": (lambda values, dtype: _object_array(values),
               dict.fromkeys(POOLS, (None, np.nan, np.float32("nan"), pd.NA, pd.NaT, np.datetime64("NaT")))),
    "list": (lambda values, dtype: list(values), dict.fromkeys(POOLS, (None, float("nan")))),
    "pandas nullable": (lambda values, dtype: pd.array(values, dtype={"int8": "Int8", "int64": "Int64", "uint64":
                                                                       "UInt64", "float64": "Float64", "bool":
                                                                       "boolean", "str": "string"}[dtype]),
                        dict.fromkeys(["int8", "int64", "uint64", "float64", "bool", "str"], (None, pd.NA))),
    "pandas category": (lambda values, dtype: pd.Series(values, dtype="category"),
                        dict.fromkeys(POOLS, (None, np.nan))),
    "torch": (_torch, {"float32": (float("nan"),), "float64": (float("nan"),)}),
}
TORCH_POOLS = ("int8", "int64", "float32", "float64", "bool")
NULLABLE_POOLS = ("int8", "int64", "uint64", "float64", "bool", "str")


@st.composite
def label_arrays(draw):
    """(container, the labels as Python values with None where one is missing, first missing row or None)."""
    container = draw(st.sampled_from(sorted(CONTAINERS)))
    pools = {"torch": TORCH_POOLS, "pandas nullable": NULLABLE_POOLS}.get(container, sorted(POOLS))
    pool = draw(st.sampled_from(pools))
    values_strategy, dtype = POOLS[pool]
    values = draw(st.lists(values_strategy, min_size=1, max_size=30))
    build, missing_values = CONTAINERS[container]
    missing_rows = []
    if missing_values.get(pool) and draw(st.booleans()):
        missing_rows = sorted(draw(st.sets(st.integers(0, len(values) - 1), min_size=1)))
    if not missing_rows:
        return build(values, dtype), values, None
    with_missing = list(values)
    for row in missing_rows:
        with_missing[row] = draw(st.sampled_from(missing_values[pool]))
    if container == "numpy" or container == "torch":  # a float array's missing value is NaN
        return build([np.nan if row in missing_rows else value for row, value in enumerate(values)], dtype), \
            values, missing_rows[0]
    return build(with_missing, dtype), values, missing_rows[0]


@PROPERTY_SETTINGS
@given(label_arrays())
def test_labels_round_trip_or_the_first_missing_row_is_named(drawn):
    labels, values, first_missing = drawn
    event(f"{type(labels).__module__.partition('.')[0]} {getattr(labels, 'dtype', 'list')}, "
          f"{'missing' if first_missing is not None else 'complete'}")
    if first_missing is not None:
        with pytest.raises(ValueError, match=rf"has a missing label .*at row {first_missing}: every row needs"):
            check_labels(labels, len(values))
        return
    checked = check_labels(labels, len(values))
    classes, indices = encode_labels(checked)
    decoded = classes[indices].tolist()
    assert len(decoded) == len(values)
    assert all(got == want and isinstance(got, str) == isinstance(want, str) for got, want in zip(decoded, values))
    assert len(classes) == len(set(values)) and classes.tolist() == sorted(set(classes.tolist()))


# Object labels mixing types, with strings that may end in NULs (which NumPy's string arrays would drop).
MIXED_POOLS = {"str": st.text(max_size=3), "int": st.integers(-2**70, 2**70), "float": st.integers(-9, 9).map(float),
               "bool": st.booleans(), "bytes": st.binary(max_size=3)}
GROUP = {"str": "str", "bytes": "bytes", "bool": "bool", "int": "number", "float": "number"}


@PROPERTY_SETTINGS
@given(st.lists(st.sampled_from(sorted(MIXED_POOLS)).flatmap(lambda kind: MIXED_POOLS[kind].map(lambda value: (kind,
                                                                                                              value))),
                min_size=1, max_size=20))
def test_object_labels_of_mixed_types_are_refused_naming_two_rows_or_round_trip(tagged):
    kinds = [kind for kind, _ in tagged]
    values = [value for _, value in tagged]
    first_group = GROUP[kinds[0]]
    mixed_row = next((row for row, kind in enumerate(kinds) if GROUP[kind] != first_group), None)
    if mixed_row is not None:
        with pytest.raises(ValueError, match=rf"mixes {kinds[0]} and {kinds[mixed_row]} labels \(row 0: .*, "
                                             rf"row {mixed_row}: "):
            check_labels(_object_array(values), len(values))
        return
    try:
        checked = check_labels(_object_array(values), len(values))
    except ValueError as error:  # only for a value NumPy's array of that type would change: name its row
        row = int(str(error).split(" at row ")[1].split(",")[0])
        stored = np.array(values[row:row + 1]) if first_group != "str" else np.array(values[row:row + 1], dtype=str)
        assert "which a NumPy" in str(error) and stored[0] != values[row]
        return
    classes, indices = encode_labels(checked)
    assert all(got == want for got, want in zip(classes[indices].tolist(), values))
    assert len(classes) == len(set(values))
