"""Property-based tests: random shapes, dtypes and magnitudes, every backend against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_DTYPE_PAIRS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerances import assert_close

from linclass_gpu import oracle

# The interpreter runs each kernel launch in Python: fewer examples keep CI time sane.
EXAMPLES = {"numpy": 60, "numpy-array": 60, "cupy": 60, "triton": 12}

problems = st.fixed_dictionaries({
    "n": st.integers(1, 70), "d": st.integers(1, 60), "c": st.integers(2, 40),
    "logit_scale": st.sampled_from([1e-3, 1.0, 30.0, 1e3]), "x_scale": st.sampled_from([1.0, 0.5, 1 / 255]),
    "seed": st.integers(0, 2**32 - 1),
})


def draw(problem, dtype):
    rng = np.random.default_rng(problem["seed"])
    n, d, c = problem["n"], problem["d"], problem["c"]
    X = rng.normal(size=(n, d)).astype(dtype)
    W = (rng.normal(size=(d, c)) * problem["logit_scale"] / np.sqrt(d)).astype(dtype)
    b = (rng.normal(size=c) * problem["logit_scale"]).astype(dtype)
    return X, rng.integers(0, c, size=n), W, b


def check(backend_name, make_backend, dtype):
    @settings(max_examples=EXAMPLES[backend_name], deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(problem=problems)
    def run(problem):
        backend = make_backend(backend_name)
        X, y, W, b = draw(problem, dtype)
        s, n, d = problem["x_scale"], problem["n"], problem["d"]
        # Logits up to ~1e3·√D: the loss is then as large, so its error scales with it.
        magnitude = 1 + float(np.abs(s * X.astype(np.float64) @ W + b).max())
        loss, dW, db = backend.softmax_loss_grad(backend.asarray(X), backend.asarray(y), W, b, x_scale=s)
        expected = oracle.softmax_loss_grad(X, y, W, b, x_scale=s)
        assert np.isfinite(loss)
        assert_close(loss / magnitude, expected[0] / magnitude, dtype, d, "softmax loss")
        assert_close(backend.to_numpy(dW), expected[1], dtype, n * max(1, int(magnitude) // 100), "dW")
        assert_close(backend.to_numpy(db), expected[2], dtype, n, "db")
        labels = (y % 2).astype(dtype)
        loss, dw, db = backend.sigmoid_loss_grad(backend.asarray(X), backend.asarray(labels), W[:, 0], b[0],
                                                 x_scale=s)
        expected = oracle.sigmoid_loss_grad(X, labels, W[:, 0], b[0], x_scale=s)
        assert_close(loss / magnitude, expected[0] / magnitude, dtype, d, "sigmoid loss")
        assert_close(backend.to_numpy(dw), expected[1], dtype, n, "dw")
        assert_close(backend.to_numpy(db), expected[2], dtype, n, "db")

    run()


@pytest.mark.parametrize("backend_name,dtype", BACKEND_DTYPE_PAIRS)
def test_random_problems_match_the_oracle(make_backend, backend_name, dtype):
    check(backend_name, make_backend, dtype)
