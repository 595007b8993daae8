"""The estimators hand each backend its features in the dtype it reads, and train only in a precision it has."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_NAMES

from linclass_gpu import SoftmaxRegression
from linclass_gpu.backends import get_backend

needs_triton = pytest.mark.skipif("triton" not in BACKEND_NAMES, reason="needs torch and triton")


def problem(rng, n=96, d=5):
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


@needs_triton
@pytest.mark.parametrize("stored", ["float16", "bfloat16"])
def test_half_precision_features_reach_the_triton_kernels_as_stored(rng, monkeypatch, stored):
    import torch

    from linclass_gpu.backends.triton_backend import TritonBackend

    X, y = problem(rng)
    X_half = torch.from_numpy(X).to(getattr(torch, stored))
    seen = []
    original = TritonBackend.fused_sgd

    def spy(self, model, X, *args, **kwargs):
        seen.append(X.dtype)
        return original(self, model, X, *args, **kwargs)

    monkeypatch.setattr(TritonBackend, "fused_sgd", spy)
    model = SoftmaxRegression(backend="triton", epochs=2, tol=None, shuffle=False).fit(X_half, torch.from_numpy(y))
    assert seen == [getattr(torch, stored)]  # no float32 copy of X
    reference = SoftmaxRegression(backend="numpy", epochs=2, tol=None, shuffle=False).fit(
        X_half.to(torch.float32).numpy(), y)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-3, atol=1e-4)


@needs_triton
def test_float64_is_refused_on_triton_rather_than_silently_float32(rng):
    X, y = problem(rng)
    with pytest.raises(ValueError, match=r"dtype='float64' cannot train on the triton backend.*backend='numpy'"):
        SoftmaxRegression(backend="triton", dtype="float64").fit(X, y)
    with pytest.raises(ValueError, match="dtype='float64'"):
        SoftmaxRegression(backend="triton", dtype="float64").partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.parametrize("backend", ["numpy"])
def test_the_numpy_backend_converts_half_precision_once(rng, backend):
    assert get_backend(backend).stored_feature_dtypes == ("uint8",)
    X, y = problem(rng)
    model = SoftmaxRegression(backend=backend, epochs=2, tol=None, random_state=0)
    assert model.fit(X.astype(np.float16), y).coef_.dtype == np.float32


def test_score_weighs_rows_by_sample_weight(rng):
    X, y = problem(rng)
    model = SoftmaxRegression(epochs=3, random_state=0).fit(X, y)
    correct = model.predict(X) == y
    weights = rng.random(len(y))
    assert model.score(X, y, sample_weight=weights) == pytest.approx(np.sum(weights * correct) / np.sum(weights))
    assert model.score(X, y) == pytest.approx(np.mean(correct))
    with pytest.raises(ValueError, match="sample_weight"):
        model.score(X, y, sample_weight=np.zeros(len(y)))
