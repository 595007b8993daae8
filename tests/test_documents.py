"""The hashed bag-of-words generator of ``bench documents`` and the benchmark's goal checks."""

from __future__ import annotations

import numpy as np
import pytest

from linclass_gpu.bench.documents import hash_words, hashed_documents
from linclass_gpu.bench.documents_bench import goal_checks


def test_documents_are_unit_rows_of_about_a_hundred_hashed_words():
    X, y = hashed_documents(2001, n_features=2**12, n_classes=7, seed=3)
    assert X.shape == (2001, 2**12) and y.shape == (2001,) and set(np.unique(y)) == set(range(7))
    assert X.has_canonical_format and X.indices.dtype == X.indptr.dtype == np.int32
    assert 80 < X.nnz / X.shape[0] < 130
    norms = np.sqrt((X.multiply(X)).sum(axis=1))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    again, _ = hashed_documents(2001, n_features=2**12, n_classes=7, seed=3)
    assert (X != again).nnz == 0  # a seed fixes the corpus


def test_hash_spreads_words_over_the_columns_with_both_signs():
    columns, signs = hash_words(np.arange(100_000), 2**10)
    counts = np.bincount(columns, minlength=2**10)
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    assert abs(signs.mean()) < 0.02


def test_feature_count_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of 2"):
        hashed_documents(10, n_features=1000)


def test_goal_checks_measure_each_softmax_provider():
    rows = [{"provider": "linclass-softmax", "status": "ok", "epoch_s": 1.0, "accuracy": 0.975},
            {"provider": "linclass-softmax-sgd", "status": "ok", "epoch_s": 4.0, "accuracy": 0.985},
            {"provider": "linclass-ovr", "status": "ok", "epoch_s": 0.1, "accuracy": 0.999},
            {"provider": "sklearn-sgd", "status": "ok", "epoch_s": 3.5, "accuracy": 0.98},
            {"provider": "sklearn-lr", "status": "ok", "epoch_s": None, "accuracy": 0.99}]
    met = {target["name"]: target["met"] for target in goal_checks(rows)}
    assert met == {"linclass-softmax: epoch time of sklearn-sgd / ours": True,
                   "linclass-softmax: accuracy - sklearn-sgd's": True,
                   "linclass-softmax: accuracy - sklearn-lr's": False,
                   "linclass-softmax-sgd: epoch time of sklearn-sgd / ours": False,
                   "linclass-softmax-sgd: accuracy - sklearn-sgd's": True,
                   "linclass-softmax-sgd: accuracy - sklearn-lr's": True}
    assert goal_checks(rows[2:]) == []  # none of ours ran
    assert [target["name"] for target in goal_checks(rows[1:2] + rows[4:])] == [
        "linclass-softmax-sgd: accuracy - sklearn-lr's"]  # only the peers that ran
